/**
 * The event hooks (issue #11), on the Effect 4 edition (the Effect 3 edition's test/hooks.test.ts, on effect 4): effects run when a connection is opened, a lease
 * is granted or ends (with the release protocol's outcome) and a backend is terminated. They run beside
 * the pool, bounded by `terminateTimeout`; a hook that fails or never ends is logged and changes nothing.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { Admin, uniqueAppName } from "../../test/support/admin.js"
import * as WardenClient from "../src/WardenClient.js"
import * as WardenPool from "../src/WardenPool.js"
import "./context.js"

const url = inject("databaseUrl")

const scopedAdmin = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(() => Admin.connect(url)),
    (admin) => Effect.promise(() => admin.close())
  )

/** Builds the Layer for the rest of the scope (with `loggers`, when given). */
const open = (config: WardenClient.WardenClientConfig, loggers?: Layer.Layer<never>) =>
  Effect.map(
    Layer.build(
      loggers === undefined ? WardenClient.layer(config) : WardenClient.layer(config).pipe(Layer.provide(loggers))
    ),
    (context) => ({ sql: Context.get(context, SqlClient.SqlClient), pool: Context.get(context, WardenPool.WardenPool) })
  )

const configFor = (
  url: string,
  app: string,
  extra: Partial<WardenClient.WardenClientConfig>
): WardenClient.WardenClientConfig => ({
  url: Redacted.make(url),
  applicationName: app,
  cancelTimeout: 300,
  drainTimeout: 300,
  rollbackTimeout: 300,
  terminateTimeout: 300,
  ...extra
})

/** Polls `probe` until `predicate` holds, for at most 10 s. */
const eventually = <A>(probe: Effect.Effect<A>, predicate: (value: A) => boolean, message: string) =>
  Effect.gen(function* () {
    const deadline = Date.now() + 10_000
    for (;;) {
      const value = yield* probe
      if (predicate(value)) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out: ${message} (last: ${String(value)})`))
      yield* Effect.sleep("25 millis")
    }
  })

describe("hooks (Effect 4)", () => {
  it.live("see connections opened, leases granted and ended with their outcome, and a backend terminated", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const app = uniqueAppName("e4-hooks")
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

        // (This edition's Layer opens no connection at build time: the first lease is the statement's.)
        yield* sql`select 1`
        yield* eventually(
          Effect.sync(() => count("released:reused")),
          (n) => n === 1,
          "a released hook for the statement"
        )
        expect(count("connected")).toBe(1)
        expect(count("acquired")).toBe(1)

        // An interrupted statement: its lease ends cancelled.
        const sleeper = yield* Effect.forkChild(sql`select pg_sleep(10)`)
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
        const stuck = yield* Effect.forkChild(sql.withTransaction(sql`select pg_sleep(10)`))
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
  )

  it.live("a hook that fails or never ends is logged and delays nothing", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const app = uniqueAppName("e4-hooks-bad")
        const admin = yield* scopedAdmin(url)
        const warnings: Array<string> = []
        const logger = Logger.make(({ logLevel, message }) => {
          if (logLevel === "Warn") warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
        })
        const { pool, sql } = yield* open(
          configFor(url, app, {
            maxConnections: 2,
            terminateTimeout: 300,
            hooks: {
              acquired: () => Effect.fail(new Error("boom")),
              released: () => Effect.never
            }
          }),
          Logger.layer([logger])
        )
        const started = performance.now()
        for (let i = 0; i < 20; i++) yield* sql`select 1`
        yield* sql.withTransaction(sql`select 1`)
        // Twenty-one leases, each with a hook that never ends: none waited for it.
        expect(performance.now() - started).toBeLessThan(2_000)
        yield* eventually(
          Effect.sync(() => warnings.filter((w) => w.includes("the released hook failed")).length),
          (n) => n === 21,
          "every hanging released hook interrupted and logged"
        )
        expect(warnings.filter((w) => w.includes("the acquired hook failed"))).toHaveLength(21)
        const stats = yield* pool.stats
        expect(stats.inUse).toBe(0)
        const backends = yield* Effect.promise(() => admin.backends(app))
        expect(backends.every((b) => b.state === "idle")).toBe(true)
      })
    )
  )
})
