/**
 * TLS in the Effect 4 edition (the mechanism is the core's; ../test/tls.test.ts covers it in full): against a private
 * server that refuses plain TCP, through a proxy that records how every connection opens, interrupted statements are
 * cancelled and every connection, CancelRequests included, opened with an SSLRequest.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { Observer } from "../../src/core/observer.js"
import { uniqueAppName } from "../../test/support/admin.js"
import { startProxy } from "../../test/support/proxy.js"
import { hasOpenssl, startTlsServer } from "../../test/support/tls.js"
import { withParams } from "../../test/support/urls.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"
import { interruptRunningSleep } from "./support/sleep.js"

const SSL_REQUEST = 80877103

describe.skipIf(!hasOpenssl())("TLS (Effect 4)", () => {
  it.live("a TLS session's cancels go over TLS, and every backend is encrypted", () =>
    Effect.gen(function* () {
      const server = yield* Effect.acquireRelease(
        Effect.promise(() => startTlsServer()),
        (s) => Effect.promise(() => s.dispose())
      )
      const observer = yield* Effect.acquireRelease(
        Effect.promise(() => Observer.connect(withParams(server.url, { sslmode: "no-verify" }))),
        (o) => Effect.promise(() => o.close())
      )
      const proxy = yield* Effect.acquireRelease(
        Effect.promise(() => startProxy({ host: "127.0.0.1", port: server.port })),
        (p) => Effect.promise(() => p.close())
      )
      const app = uniqueAppName("e4-tls")
      const layer = WardenClient.layer({
        url: Redacted.make(withParams(proxy.rewrite(server.url), { sslmode: "require" })),
        applicationName: app,
        maxConnections: 1,
        cancelChannel: false
      })
      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const pool = yield* WardenPool.WardenPool
        for (let round = 0; round < 2; round++) {
          yield* interruptRunningSleep(sql, observer, app, 3_000)
        }
        const stats = yield* pool.stats
        expect(stats.counters.cancelled, JSON.stringify(stats.counters)).toBe(2)
        const plain = yield* Effect.promise(() =>
          observer.query<{ pid: number }>(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1 AND NOT s.ssl",
            [app]
          )
        )
        expect(plain).toEqual([])
      }).pipe(Effect.provide(layer))
      const kinds = proxy.openings().map((b) => (b.length >= 8 ? b.readInt32BE(4) : -1))
      expect(kinds.length, "the session and two CancelRequests").toBeGreaterThanOrEqual(3)
      expect(kinds.filter((k) => k !== SSL_REQUEST)).toEqual([])
    }).pipe(Effect.scoped)
  )
})
