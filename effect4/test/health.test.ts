/**
 * Health (issue #11), on the Effect 4 edition: the core's checks (../../test/health.test.ts on Effect 3)
 * through this edition's layer. A connection idle past `validateIdleAfter` whose backend stopped
 * answering is replaced before anyone gets it; killed idle backends never reach a borrower.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { Admin, uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"

const url = inject("databaseUrl")

const scopedAdmin = Effect.acquireRelease(
  Effect.promise(() => Admin.connect(url)),
  (admin) => Effect.promise(() => admin.close())
)

const open = (app: string, extra: Partial<WardenClient.WardenClientConfig>) =>
  Effect.map(
    Layer.build(WardenClient.layer({ url: Redacted.make(url), applicationName: app, ...extra })),
    (context) => ({ sql: Context.get(context, SqlClient.SqlClient), pool: Context.get(context, WardenPool.WardenPool) })
  )

const backendPid = (sql: SqlClient.SqlClient) =>
  Effect.map(sql<{ pid: number }>`select pg_backend_pid() as pid`, (rows) => rows[0]!.pid)

describe("health (Effect 4)", () => {
  it.live("sql-pg 4's keepAlive is taken as keepAliveDelay; both set and different is InvalidConfig", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const { sql } = yield* open(uniqueAppName("e4-keepalive"), { keepAlive: "10 seconds" })
        expect(yield* backendPid(sql)).toBeGreaterThan(0)
        const exit = yield* Effect.exit(
          open(uniqueAppName("e4-keepalive-bad"), { keepAlive: "10 seconds", keepAliveDelay: "20 seconds" })
        )
        expect(exit._tag).toBe("Failure")
        expect(String(exit._tag === "Failure" ? exit.cause : "")).toContain("keepAlive and keepAliveDelay")
      })
    )
  )

  it.live(
    "a connection idle past validateIdleAfter whose backend stopped answering is replaced before anyone gets it",
    () =>
      Effect.scoped(
        Effect.gen(function* () {
          const app = uniqueAppName("e4-health-frozen")
          const admin = yield* scopedAdmin
          const { pool, sql } = yield* open(app, { maxConnections: 1, validateIdleAfter: 200, resetTimeout: 300 })
          const first = yield* backendPid(sql)
          yield* Effect.sleep("400 millis")
          admin.freeze(first)
          const second = yield* backendPid(sql).pipe(
            Effect.timeoutOrElse({
              duration: "5 seconds",
              orElse: () => Effect.die(new Error("the borrower got the frozen connection"))
            }),
            Effect.ensuring(Effect.sync(() => admin.thaw(first)))
          )
          expect(second).not.toBe(first)
          expect((yield* pool.stats).counters.validationFailures).toBe(1)
          yield* Effect.promise(() =>
            admin.waitFor(
              () => admin.backends(app),
              (bs) => !bs.some((b) => b.pid === first),
              { timeoutMs: 5_000, message: `backend ${first} is still on the server` }
            )
          )
        })
      )
  )

  it.live("killed idle backends leave the pool, the next borrower gets a live one, and minConnections is kept", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const app = uniqueAppName("e4-health-killed")
        const admin = yield* scopedAdmin
        const { pool, sql } = yield* open(app, { maxConnections: 2, minConnections: 2 })
        const idle = yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.length === 2,
            { timeoutMs: 5_000, message: "minConnections never reached" }
          )
        )
        const killed = idle.map((b) => b.pid)
        yield* Effect.promise(() =>
          admin.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [killed])
        )
        // The pool drops a connection as soon as its socket closes; a statement sent in the instant before that
        // fails with 57P01 (pg-warden cannot know whether it ran, so it is not run again). Wait for the close.
        yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => !bs.some((b) => killed.includes(b.pid)),
            { timeoutMs: 5_000, message: "the killed backends are still on the server" }
          )
        )
        for (let i = 0; ; i++) {
          const { pool: held } = yield* pool.audit
          if (held.idle.length + held.leased.length === 2 && held.idle.every((p) => !killed.includes(p))) break
          if (i > 200) return yield* Effect.die(new Error("the pool never dropped the killed connections"))
          yield* Effect.sleep("25 millis")
        }
        for (let i = 0; i < 5; i++) expect(killed).not.toContain(yield* backendPid(sql))
        yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.length === 2 && bs.every((b) => !killed.includes(b.pid)),
            { timeoutMs: 5_000, message: "minConnections not refilled after the kill" }
          )
        )
      })
    )
  )
})
