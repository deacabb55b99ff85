/**
 * The event hooks (issue #11), on the Effect 3 edition: effects run when a connection is opened, a lease
 * is granted or ends (with the release protocol's outcome) and a backend is terminated. They run beside
 * the pool, bounded by `terminateTimeout`; a hook that fails or never ends is logged and changes nothing.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import { uniqueAppName } from "./support/admin.js"
import { configFor, eventually, open, scopedAdmin } from "./support/warden.js"
import "./support/context.js"

const url = inject("databaseUrl")

describe("hooks", () => {
  it.scopedLive("see connections opened, leases granted and ended with their outcome, and a backend terminated", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("hooks")
      const admin = yield* scopedAdmin(url)
      const seen: Array<string> = []
      const record = (what: string) => Effect.sync(() => seen.push(what))
      const { sql } = yield* open(
        configFor(url, app, {
          maxConnections: 1,
          hooks: {
            connected: () => record("connected"),
            acquired: () => record("acquired"),
            released: ({ outcome }) => record(`released:${outcome}`),
            terminated: ({ outcome }) => record(`terminated:${outcome}`)
          }
        })
      )
      const count = (what: string) => seen.filter((s) => s === what).length

      // The Layer's own check of the server at build time is a lease too.
      yield* eventually(
        Effect.sync(() => count("released:reused")),
        (n) => n === 1,
        "a released hook for the Layer's check"
      )
      yield* sql`select 1`
      yield* eventually(
        Effect.sync(() => count("released:reused")),
        (n) => n === 2,
        "a released hook for the statement"
      )
      expect(count("connected")).toBe(1)
      expect(count("acquired")).toBe(2)

      // An interrupted statement: its lease ends cancelled.
      const sleeper = yield* Effect.fork(sql`select pg_sleep(10)`)
      yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(app),
          (bs) => bs.some((b) => b.state === "active" && b.query.includes("pg_sleep(10)")),
          { timeoutMs: 5_000, message: "pg_sleep(10) never ran" }
        )
      )
      yield* Fiber.interrupt(sleeper)
      yield* eventually(
        Effect.sync(() => count("released:cancelled")),
        (n) => n === 1,
        "a released hook with outcome cancelled"
      )

      // A frozen backend inside a transaction: the interruption terminates it, and the server confirms.
      const stuck = yield* Effect.fork(sql.withTransaction(sql`select pg_sleep(10)`))
      const busy = yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(app),
          (bs) => bs.some((b) => b.state === "active" && b.query.includes("pg_sleep(10)")),
          { timeoutMs: 5_000, message: "pg_sleep(10) never ran in the transaction" }
        )
      )
      const pid = busy.find((b) => b.query.includes("pg_sleep(10)"))!.pid
      admin.freeze(pid)
      try {
        yield* Fiber.interrupt(stuck)
      } finally {
        admin.thaw(pid)
      }
      yield* eventually(
        Effect.sync(() => count("terminated:terminated") + count("released:terminated")),
        (n) => n === 2,
        "a terminated hook confirmed by the server and a released hook with outcome terminated"
      )
      yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(app),
          (bs) => !bs.some((b) => b.pid === pid),
          { timeoutMs: 5_000, message: "the terminated backend is still on the server" }
        )
      )
    })
  )

  it.scopedLive("a hook that fails or never ends is logged and delays nothing", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("hooks-bad")
      const admin = yield* scopedAdmin(url)
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel.label === "WARN")
          warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
      })
      const { pool, sql } = yield* open(
        configFor(url, app, {
          maxConnections: 2,
          terminateTimeout: "300 millis",
          hooks: {
            acquired: () => Effect.fail(new Error("boom")),
            released: () => Effect.never
          }
        })
      ).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      // The Layer's own check of the server at build time is the first lease.
      yield* eventually(
        Effect.sync(() => warnings.filter((w) => w.includes("the acquired hook failed")).length),
        (n) => n === 1,
        "the acquired hook of the Layer's check logged"
      )
      const started = performance.now()
      for (let i = 0; i < 20; i++) yield* sql`select 1`
      yield* sql.withTransaction(sql`select 1`)
      // Twenty-one leases, each with a hook that never ends: none waited for it.
      expect(performance.now() - started).toBeLessThan(2_000)
      yield* eventually(
        Effect.sync(() => warnings.filter((w) => w.includes("the released hook failed")).length),
        (n) => n === 22,
        "every hanging released hook interrupted and logged"
      )
      expect(warnings.filter((w) => w.includes("the acquired hook failed"))).toHaveLength(22)
      const stats = yield* pool.stats
      expect(stats.inUse).toBe(0)
      const backends = yield* Effect.promise(() => admin.backends(app))
      expect(backends.every((b) => b.state === "idle")).toBe(true)
    })
  )
})
