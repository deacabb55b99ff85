/**
 * Contract points that need a constructed situation rather than load:
 * - C4: a statement that completes while its cancel is on its way leaves the cancel
 *   unconfirmed; the next borrower's statement is never its victim (a probe confirms the cancel,
 *   or, with `cancelProbe: false`, the session is terminated and the server shows a new PID);
 * - C7: the audit reports a backend with the pool's application_name that the pool does not hold.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import pg from "pg"
import { WardenClient, WardenPool } from "../src/index.js"
import { type Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import { startProxy } from "./support/proxy.js"
import {
  backendGone,
  boundMs,
  configFor,
  isRunningSleep,
  open,
  proxyTarget,
  scopedAdmin,
  waitForBackends
} from "./support/warden.js"

const url = inject("databaseUrl")

/**
 * Runs `body` with a fresh application name and an admin session, then waits until the server
 * shows no backend under that name.
 */
const scenario = <E>(name: string, body: (app: string, admin: Admin) => Effect.Effect<void, E, Scope.Scope>) =>
  Effect.gen(function* () {
    const app = uniqueAppName(name)
    const admin = yield* scopedAdmin(url)
    yield* body(app, admin)
    yield* Effect.promise(() => admin.waitForNoBackends(app))
  }).pipe(Effect.scoped)

/** A fault proxy in front of the server, and a pool of one through it with generous cancel deadlines. */
const proxiedPoolOfOne = (app: string, extra: Partial<WardenClient.WardenClientConfig> = {}) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.promise(() => startProxy(proxyTarget(url))),
      (p) => Effect.promise(() => p.close())
    ),
    (proxy) => ({
      proxy,
      layer: WardenClient.layer({
        url: Redacted.make(proxy.rewrite(url)),
        applicationName: app,
        maxConnections: 1,
        cancelTimeout: 3000,
        drainTimeout: 3000,
        ...extra
      })
    })
  )

describe("contract", () => {
  it.live("C4: a cancel that reaches the server after its statement finished never hits the next borrower", () =>
    scenario("c4", (app, admin) =>
      Effect.gen(function* () {
        const { proxy, layer } = yield* proxiedPoolOfOne(app)
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const pool = yield* WardenPool.WardenPool
          const fiber = yield* Effect.fork(sql`select pg_sleep(0.5)`)
          yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep), { intervalMs: 5 })
          // The CancelRequest (a new connection through the proxy) is held back 1 s; everything sent
          // after the switch back to pass goes at once. So the statement (500 ms, margin enough for the
          // observer to see it running on 2 busy cores) finishes and its result arrives long before the
          // cancel reaches the server.
          proxy.setMode("delay", { delayMs: 1_000 })
          const interrupting = yield* Effect.fork(Fiber.interrupt(fiber))
          yield* Effect.sleep("30 millis")
          proxy.setMode("pass")
          // The next borrower's statement runs while the late cancel lands: it must not be its victim.
          const started = Date.now()
          const rows = yield* sql<{ pid: number }>`select pg_sleep(1.3), pg_backend_pid() as pid`
          expect(rows.length).toBe(1)
          expect(Date.now() - started).toBeGreaterThanOrEqual(1_250)
          yield* Fiber.join(interrupting)
          const stats = yield* pool.stats
          // confirmed by the probe (session reused) or terminated: never handed over unconfirmed
          expect(stats.counters.cancelled + stats.counters.terminated).toBeGreaterThanOrEqual(1)
        }).pipe(Effect.provide(layer))
      })
    )
  )

  it.live(
    "C2: a statement that ended with our cancel confirms it, without waiting for the server to close the cancel socket",
    () =>
      scenario("c2early", (app, admin) =>
        Effect.gen(function* () {
          // The cancel socket's close is held back 3 s, past the cancel deadline (500 ms): waiting for it
          // would end in a terminate. The statement's own 57014 is enough to know the signal was used.
          const { proxy, layer } = yield* proxiedPoolOfOne(app, { cancelTimeout: 500, cancelChannel: false })
          yield* Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const pool = yield* WardenPool.WardenPool
            const [{ pid: before }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
            proxy.holdServerClose(3000)
            const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
            yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep), { intervalMs: 5 })
            const started = Date.now()
            yield* Fiber.interrupt(fiber)
            expect(Date.now() - started).toBeLessThan(400)
            proxy.holdServerClose(0)
            // Same backend, idle, reused by the next statement: it was cancelled, not terminated.
            yield* waitForBackends(
              admin,
              app,
              (bs) => bs.length === 1 && bs[0]!.pid === before && bs[0]!.state === "idle"
            )
            const [{ pid: after }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
            expect(after).toBe(before)
            const stats = yield* pool.stats
            expect(stats.counters.cancelled).toBe(1)
            expect(stats.counters.terminated).toBe(0)
          }).pipe(Effect.provide(layer))
        })
      )
  )

  it.live("C2: cancels go through the pool's one control connection (pg_cancel_backend), closed with the pool", () =>
    scenario("channel", (app, admin) =>
      Effect.gen(function* () {
        const channel = `pg-warden-control:${app}`
        const interruptSleep = Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const fiber = yield* Effect.fork(sql`select pg_sleep(10)`)
          yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep), { intervalMs: 5 })
          yield* Fiber.interrupt(fiber)
          const [{ pid }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
          return pid
        })
        const pids = yield* Effect.gen(function* () {
          // The first cancel goes by the protocol and opens the channel for the next ones.
          const first = yield* interruptSleep
          const [open] = yield* waitForBackends(admin, channel, (bs) => bs.length === 1)
          const next = [yield* interruptSleep, yield* interruptSleep, yield* interruptSleep]
          const after = yield* Effect.promise(() => admin.backends(channel))
          // One channel backend, the same one, whose last statement was a pg_cancel_backend.
          expect(after.map((b) => b.pid)).toEqual([open!.pid])
          expect(after[0]!.query).toMatch(/^SELECT pg_cancel_backend/)
          const stats = yield* (yield* WardenPool.WardenPool).stats
          expect(stats.counters.cancelled).toBe(4)
          expect(stats.counters.terminated).toBe(0)
          return [first, ...next]
        }).pipe(
          Effect.provide(WardenClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: 1 }))
        )
        // Every cancelled statement left its session reusable: one backend throughout.
        expect(new Set(pids).size).toBe(1)
        yield* Effect.promise(() => admin.waitForNoBackends(channel))
      })
    )
  )

  it.live("C2: concurrent cancels take turns on the control connection: pg's own queue is never used", () =>
    scenario("channel-many", (app, admin) =>
      Effect.gen(function* () {
        const channel = `pg-warden-control:${app}`
        const warnings: Array<string> = []
        const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`)
        process.on("warning", onWarning)
        yield* Effect.addFinalizer(() => Effect.sync(() => process.off("warning", onWarning)))
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const interruptAll = Effect.gen(function* () {
            const fibers = yield* Effect.forEach(Array.from({ length: 6 }), () => Effect.fork(sql`select pg_sleep(10)`))
            yield* waitForBackends(admin, app, (bs) => bs.filter(isRunningSleep).length === 6, { intervalMs: 5 })
            yield* Fiber.interruptAll(fibers)
          })
          // The first round opens the channel (its cancels go by the protocol); the second has six
          // cancels wanting the one channel at the same moment.
          yield* interruptAll
          yield* waitForBackends(admin, channel, (bs) => bs.length === 1)
          yield* interruptAll
          expect((yield* Effect.promise(() => admin.backends(app))).filter(isRunningSleep)).toEqual([])
          const stats = yield* (yield* WardenPool.WardenPool).stats
          expect(stats.counters.cancelled).toBe(12)
          expect(stats.counters.terminated).toBe(0)
        }).pipe(
          Effect.provide(WardenClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: 6 }))
        )
        // Node reports pg's deprecated queue ("already executing a query") as a warning, once per process.
        expect(warnings.filter((w) => /already executing a query/.test(w))).toEqual([])
      })
    )
  )

  it.live("C4: with cancelProbe off, an unconfirmed cancel terminates the session (new PID on the server)", () =>
    scenario("c4t", (app, admin) =>
      Effect.gen(function* () {
        const { proxy, layer } = yield* proxiedPoolOfOne(app, { cancelProbe: false })
        yield* Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const pool = yield* WardenPool.WardenPool
          const [{ pid: before }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
          // Every byte now takes 600 ms through the proxy, the CancelRequest included. The statement
          // runs 300 ms on the server and is interrupted only once the server shows it running, so
          // it has finished (at most 300 ms later) before the cancel arrives (at least 600 ms later).
          proxy.setMode("delay", { delayMs: 600 })
          const fiber = yield* Effect.fork(sql`select pg_sleep(0.3)`)
          yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep), { intervalMs: 5 })
          yield* Fiber.interrupt(fiber)
          proxy.setMode("pass")
          const [{ pid: after }] = yield* sql<{ pid: number }>`select pg_backend_pid() as pid`
          expect(after).not.toBe(before)
          const stats = yield* pool.stats
          expect(stats.counters.terminated).toBeGreaterThanOrEqual(1)
          yield* backendGone(admin, app, before)
        }).pipe(Effect.provide(layer))
      })
    )
  )

  it.live("C1/C2: interrupting again and closing the Layer while a release protocol runs both stay bounded", () =>
    scenario("release", (app, admin) =>
      Effect.gen(function* () {
        const config = configFor(url, app, { maxConnections: 1 })
        const bound = boundMs(config)
        const { sql, close } = yield* open(config)
        const running = yield* Effect.forkDaemon(sql.withTransaction(sql`select pg_sleep(10)`))
        const [backend] = yield* waitForBackends(admin, app, (bs) => bs.some(isRunningSleep))
        // A frozen backend never answers the cancel: the release protocol has to run to its deadlines.
        admin.freeze(backend!.pid)
        try {
          const started = Date.now()
          const first = yield* Effect.forkDaemon(Fiber.interrupt(running))
          yield* Effect.sleep("50 millis") // the release protocol is now running
          const second = yield* Effect.forkDaemon(Fiber.interrupt(running))
          yield* close
          yield* Fiber.join(first)
          yield* Fiber.join(second)
          expect(Date.now() - started).toBeLessThan(bound)
        } finally {
          admin.thaw(backend!.pid)
        }
      })
    )
  )

  it.live("C7: the audit reports a backend under the pool's name that the pool does not hold", () =>
    scenario("c7", (app, admin) =>
      Effect.gen(function* () {
        yield* Effect.gen(function* () {
          const pool = yield* WardenPool.WardenPool
          const clean = yield* pool.audit
          expect(clean.ok).toBe(true)
          expect(clean.server.map((b) => b.pid).sort()).toEqual([...clean.pool.idle, ...clean.pool.leased].sort())
          // A stranger using the pool's application_name: exactly what a leak looks like to the server.
          const stranger = new pg.Client({ connectionString: url, application_name: app })
          stranger.on("error", () => {})
          yield* Effect.promise(() => stranger.connect())
          const pid = (stranger as unknown as { processID: number }).processID
          const leaked = yield* pool.audit
          expect(leaked.ok).toBe(false)
          expect(leaked.unknownToPool.map((b) => b.pid)).toEqual([pid])
          yield* Effect.promise(() => stranger.end())
          yield* backendGone(admin, app, pid)
          expect((yield* pool.audit).ok).toBe(true)
        }).pipe(Effect.provide(WardenClient.layer({ url: Redacted.make(url), applicationName: app })))
      })
    )
  )
})
