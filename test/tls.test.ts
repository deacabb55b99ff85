/**
 * TLS: a private server that refuses plain TCP (test/support/tls.ts), reached through a proxy that records the bytes
 * opening every connection. Every path that talks to the server (sessions, the cancel channel, control connections,
 * the protocol CancelRequest) must go over TLS, and `sslmode` must mean what libpq documents.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { WardenError } from "../src/index.js"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { startProxy } from "./support/proxy.js"
import { hasOpenssl, startTlsServer, type TlsServer } from "./support/tls.js"
import { withParams } from "./support/urls.js"
import { configFor, isRunningSleep, open, promise, waitForBackends } from "./support/warden.js"

const plainUrl = inject("databaseUrl")

const SSL_REQUEST = 80877103
const CANCEL_REQUEST = 80877102

/** What opened a connection: its first message's code (SSLRequest, CancelRequest, or a startup packet's version). */
const kindOf = (opening: Buffer): string => {
  if (opening.length < 8) return `short(${opening.length})`
  const code = opening.readInt32BE(4)
  return code === SSL_REQUEST ? "SSLRequest" : code === CANCEL_REQUEST ? "CancelRequest" : `plain(${code})`
}

const tlsServer = Effect.acquireRelease(
  promise(() => startTlsServer()),
  (server) => promise(() => server.dispose())
)

/** Backends of `app` and of its control connections, with whether each is encrypted (the server's `pg_stat_ssl`). */
const encryption = (admin: Admin, app: string) =>
  promise(() =>
    admin.query<{ application_name: string; ssl: boolean }>(
      `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.application_name IN ($1, $2)`,
      [app, `pg-warden-control:${app}`]
    )
  )

const failureReason = <A, E>(exit: Exit.Exit<A, E>): unknown =>
  Exit.isSuccess(exit)
    ? "succeeded"
    : exit.cause._tag === "Fail"
      ? WardenError.fromSqlError(exit.cause.error as never)?.reason
      : exit.cause._tag

describe.skipIf(!hasOpenssl())("TLS", () => {
  it.scoped(
    "over TLS, sessions, the cancel channel, control connections and every CancelRequest are encrypted",
    () =>
      Effect.gen(function* () {
        const server: TlsServer = yield* tlsServer
        const admin = yield* Effect.acquireRelease(
          promise(() => Admin.connect(withParams(server.url, { sslmode: "no-verify" }))),
          (a) => promise(() => a.close())
        )
        const proxy = yield* Effect.acquireRelease(
          promise(() => startProxy({ host: "127.0.0.1", port: server.port })),
          (p) => promise(() => p.close())
        )
        const url = withParams(proxy.rewrite(server.url), { sslmode: "require" })
        for (const cancelChannel of [true, false]) {
          const app = uniqueAppName(`tls-${cancelChannel ? "channel" : "protocol"}`)
          const { sql, pool, close } = yield* open(configFor(url, app, { maxConnections: 2, cancelChannel }))
          // Three interrupted statements: the first cancel goes by protocol (and opens the channel), the others by
          // the channel when it is on.
          for (let round = 0; round < 3; round++) {
            const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
            yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))
            yield* Fiber.interrupt(fiber)
            yield* waitForBackends(admin, app, (bs) => !bs.some(isRunningSleep), { timeoutMs: 3_000 })
          }
          const audit = yield* pool.audit
          expect(audit.ok, JSON.stringify(audit)).toBe(true)
          const seen = yield* encryption(admin, app)
          expect(seen.length).toBeGreaterThan(0)
          expect(
            seen.filter((b) => !b.ssl),
            "backends without TLS"
          ).toEqual([])
          if (cancelChannel) expect(seen.some((b) => b.application_name === `pg-warden-control:${app}`)).toBe(true)
          const stats = yield* pool.stats
          expect(stats.counters.cancelled, JSON.stringify(stats.counters)).toBe(3)
          yield* close
        }
        // What the server was sent: every connection opened with an SSLRequest, none with a CancelRequest or a
        // startup packet in the clear; and more connections than sessions, so cancels and control connections went
        // through the proxy too.
        const kinds = proxy.openings().map(kindOf)
        expect(
          kinds.filter((k) => k !== "SSLRequest"),
          JSON.stringify(kinds)
        ).toEqual([])
        expect(kinds.length).toBeGreaterThan(4)
      }),
    60_000
  )

  it.scoped("sslmode means what libpq documents, against a server that refuses plain TCP and one that has no TLS", () =>
    Effect.gen(function* () {
      const server: TlsServer = yield* tlsServer
      const connects = (url: string) =>
        Effect.exit(
          Effect.scoped(
            Effect.gen(function* () {
              const { sql } = yield* open(configFor(url, uniqueAppName("tls-mode"), { maxConnections: 1 }))
              const rows = yield* (sql as SqlClient.SqlClient)<{
                ssl: boolean
              }>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`
              return rows[0]?.ssl
            })
          )
        )
      const on = (params: Record<string, string>, host = "127.0.0.1") =>
        withParams(
          (() => {
            const u = new URL(server.url)
            u.hostname = host
            return u.toString()
          })(),
          params
        )
      // The certificate names localhost only, and its CA is ours.
      expect(yield* connects(on({ sslmode: "require" }))).toEqual(Exit.succeed(true))
      expect(yield* connects(on({ sslmode: "prefer" }))).toEqual(Exit.succeed(true))
      expect(yield* connects(on({ sslmode: "allow" }))).toEqual(Exit.succeed(true))
      expect(yield* connects(on({ sslmode: "verify-ca", sslrootcert: server.caFile }))).toEqual(Exit.succeed(true))
      expect(yield* connects(on({ sslmode: "verify-full", sslrootcert: server.caFile }, "localhost"))).toEqual(
        Exit.succeed(true)
      )
      // Refused: the wrong name, an unknown CA, no TLS at all, and verify-ca without a CA to verify with.
      expect(failureReason(yield* connects(on({ sslmode: "verify-full", sslrootcert: server.caFile })))).toBe(
        "ConnectFailed"
      )
      expect(failureReason(yield* connects(on({ sslmode: "verify-full" }, "localhost")))).toBe("ConnectFailed")
      expect(failureReason(yield* connects(on({ sslmode: "disable" })))).toBe("ConnectFailed")
      expect(failureReason(yield* connects(on({ sslmode: "verify-ca" })))).toBe("InvalidConfig")
      expect(failureReason(yield* connects(on({ sslmode: "sometimes" })))).toBe("InvalidConfig")
      // The test server (no TLS unless it is the machine's own): prefer and allow fall back to or stay plain.
      const offersTls = yield* Effect.exit(
        Effect.scoped(
          Effect.gen(function* () {
            const { sql } = yield* open(
              configFor(withParams(plainUrl, { sslmode: "require" }), uniqueAppName("tls-probe"))
            )
            return yield* sql`select 1`
          })
        )
      )
      const expected = Exit.succeed(Exit.isSuccess(offersTls))
      expect(yield* connects(withParams(plainUrl, { sslmode: "prefer" }))).toEqual(expected)
      expect(yield* connects(withParams(plainUrl, { sslmode: "allow" }))).toEqual(Exit.succeed(false))
    })
  )
})
