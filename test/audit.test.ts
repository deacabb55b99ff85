/**
 * The audit by PID and the periodic audit (issue #11), on the Effect 3 edition: the audit also finds the
 * pool's backends by the PIDs the server confirmed (a session renamed by `SET application_name` is still
 * the pool's; a held session whose backend is gone is reported), and `auditInterval` logs what it finds.
 * Every PID is the server's, from a separate admin connection.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import pg from "pg"
import { uniqueAppName } from "./support/admin.js"
import { configFor, eventually, open, scopedAdmin } from "./support/warden.js"
import "./support/context.js"

const url = inject("databaseUrl")

describe("audit", () => {
  it.scopedLive("finds the pool's backends by PID: renamed ones are the pool's, gone ones are reported", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("audit-pid")
      const admin = yield* scopedAdmin(url)
      const { pool, sql } = yield* open(configFor(url, app, { maxConnections: 2 }))
      const renamedPid = yield* Deferred.make<number>()
      const holdRenamed = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(
        Effect.scoped(
          Effect.gen(function* () {
            const connection = yield* sql.reserve
            yield* connection.execute("SET application_name = 'renamed-by-user'", [], undefined)
            const [row] = yield* connection.execute("select pg_backend_pid() as pid", [], undefined)
            yield* Deferred.succeed(renamedPid, (row as { pid: number }).pid)
            yield* Deferred.await(holdRenamed)
          })
        )
      )
      const pid = yield* Deferred.await(renamedPid)
      const report = yield* pool.audit
      expect(report.renamed.map((b) => b.pid)).toEqual([pid])
      expect(report.renamed[0]!.applicationName).toBe("renamed-by-user")
      expect(report.unknownToPool).toHaveLength(0)
      expect(report.missingOnServer).toHaveLength(0)
      expect(report.ok).toBe(true)

      // The held session's backend killed from outside: until the pool takes it back, the audit says so.
      yield* Effect.promise(() => admin.query("SELECT pg_terminate_backend($1)", [pid]))
      yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1", [pid]),
          (rows) => rows[0]?.n === 0,
          { timeoutMs: 5_000, message: "the killed backend is still on the server" }
        )
      )
      const after = yield* pool.audit
      expect(after.missingOnServer).toEqual([pid])
      expect(after.ok).toBe(false)
      yield* Deferred.succeed(holdRenamed, undefined)
      yield* Fiber.await(holder)
      expect((yield* pool.audit).ok).toBe(true)
    })
  )

  it.scopedLive("auditInterval logs a warning naming a backend under the pool's name that the pool does not hold", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("audit-periodic")
      yield* scopedAdmin(url)
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel.label === "WARN")
          warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      })
      const { sql } = yield* open(configFor(url, app, { maxConnections: 1, auditInterval: "200 millis" })).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      yield* sql`select 1`
      // Nothing wrong: no warning over a few audits.
      yield* Effect.sleep("700 millis")
      expect(warnings.filter((w) => w.includes("audit"))).toHaveLength(0)
      // A connection under the pool's name that the pool does not hold (another process misconfigured, say).
      const stranger = new pg.Client({ connectionString: url, application_name: app })
      yield* Effect.acquireRelease(
        Effect.promise(() => stranger.connect()),
        () => Effect.promise(() => stranger.end())
      )
      const [{ pid }] = (yield* Effect.promise(() => stranger.query<{ pid: number }>("select pg_backend_pid() as pid")))
        .rows as [{ pid: number }]
      yield* eventually(
        Effect.sync(() => warnings.filter((w) => w.includes(`does not hold`) && w.includes(String(pid)))),
        (found) => found.length > 0,
        "a periodic audit warning naming the stranger's backend"
      )
    })
  )
})
