/**
 * Health (issue #11), on the Effect 3 edition: a connection idle past `validateIdleAfter` is checked before
 * it is handed out, so a borrower never gets one that stopped answering; killed idle backends are
 * replaced; `minConnections` is kept after failures. The truth is the server's: which backend ran the
 * borrower's statement, and which backends remain.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { uniqueAppName } from "./support/admin.js"
import { startProxy } from "./support/proxy.js"
import {
  backendPid,
  configFor,
  eventually,
  open,
  proxyTarget,
  scopedAdmin,
  scopedPrivateServer
} from "./support/warden.js"
import "./support/context.js"

const url = inject("databaseUrl")

describe("health", () => {
  it.scopedLive("idle connections cut through the fault proxy leave the pool; the next borrower gets a live one", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("health-cut")
      const admin = yield* scopedAdmin(url)
      const proxy = yield* Effect.acquireRelease(
        Effect.promise(() => startProxy(proxyTarget(url))),
        (proxy) => Effect.promise(() => proxy.close())
      )
      const { pool, sql } = yield* open(configFor(proxy.rewrite(url), app, { maxConnections: 2, minConnections: 2 }))
      const idle = yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(app),
          (bs) => bs.length === 2,
          { timeoutMs: 5_000, message: "minConnections never reached" }
        )
      )
      const cut = idle.map((b) => b.pid)
      // Every connection through the proxy reset at once (a load balancer or NAT dropping them).
      proxy.reset()
      yield* eventually(
        pool.audit,
        (report) =>
          report.pool.idle.length + report.pool.leased.length === 2 && report.pool.idle.every((p) => !cut.includes(p)),
        "the pool dropped the gone connections and holds two others"
      )
      const started = performance.now()
      const pid = yield* backendPid(sql)
      expect(performance.now() - started).toBeLessThan(5_000 + 1_500)
      expect(cut).not.toContain(pid)
      // The server ends the cut backends too (their sockets are gone), and the pool is back to minConnections.
      yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(app),
          (bs) => bs.length === 2 && bs.every((b) => !cut.includes(b.pid)),
          { timeoutMs: 5_000, message: "the cut backends are still there, or minConnections was not refilled" }
        )
      )
    })
  )

  it.scopedLive(
    "after a server restart the next borrower gets a live connection at once, within the connect deadline",
    () =>
      Effect.gen(function* () {
        const server = yield* scopedPrivateServer
        const app = uniqueAppName("health-restart")
        const { sql } = yield* open(
          configFor(server.url, app, { maxConnections: 2, minConnections: 2, connectTimeout: "2 seconds" })
        )
        const before = yield* scopedAdmin(server.url)
        const old = yield* Effect.promise(() =>
          before.waitFor(
            () => before.backends(app),
            (bs) => bs.length === 2,
            { timeoutMs: 5_000, message: "minConnections never reached" }
          )
        )
        yield* Effect.promise(() => before.close())
        yield* Effect.promise(() => server.restart())
        // The restart closed every socket; the pool dropped those connections as they closed.
        const started = performance.now()
        const pid = yield* backendPid(sql)
        expect(performance.now() - started).toBeLessThan(2_000 + 1_500)
        expect(old.map((b) => b.pid)).not.toContain(pid)
        const after = yield* scopedAdmin(server.url)
        expect((yield* Effect.promise(() => after.backends(app))).map((b) => b.pid)).toContain(pid)
      }),
    60_000
  )

  it.scopedLive(
    "a connection idle past validateIdleAfter whose backend stopped answering is replaced before anyone gets it",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("health-frozen")
        const admin = yield* scopedAdmin(url)
        const { pool, sql } = yield* open(
          configFor(url, app, { maxConnections: 1, validateIdleAfter: "200 millis", resetTimeout: "300 millis" })
        )
        const first = yield* backendPid(sql)
        yield* Effect.sleep("400 millis")
        // Alive, socket open, silent: nothing on the client side can tell it from a working one.
        admin.freeze(first)
        const started = performance.now()
        const second = yield* backendPid(sql).pipe(
          Effect.timeoutFail({
            duration: "5 seconds",
            onTimeout: () => new Error("the borrower got the frozen connection")
          }),
          Effect.ensuring(Effect.sync(() => admin.thaw(first)))
        )
        const waited = performance.now() - started
        expect(second).not.toBe(first)
        // The validation's deadline plus a connect, generously.
        expect(waited).toBeLessThan(3_000)
        const stats = yield* pool.stats
        expect(stats.counters.validated).toBeGreaterThanOrEqual(1)
        expect(stats.counters.validationFailures).toBe(1)
        // The frozen backend was terminated: once thawed, it is gone from the server.
        yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => !bs.some((b) => b.pid === first),
            { timeoutMs: 5_000, message: `backend ${first} is still on the server` }
          )
        )
      })
  )

  it.scopedLive(
    "an idle connection nobody takes is checked in the background and replaced when it stopped answering",
    () =>
      Effect.gen(function* () {
        const app = uniqueAppName("health-background")
        const admin = yield* scopedAdmin(url)
        const { pool } = yield* open(
          configFor(url, app, {
            maxConnections: 2,
            minConnections: 1,
            validateIdleAfter: "300 millis",
            resetTimeout: "300 millis"
          })
        )
        const [idle] = yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.length === 1,
            { timeoutMs: 5_000, message: "minConnections never reached" }
          )
        )
        admin.freeze(idle!.pid)
        // No statement at all: the maintenance tick finds it silent and replaces it.
        yield* eventually(
          pool.stats,
          (stats) => stats.counters.validationFailures === 1,
          "the background check failed"
        ).pipe(Effect.ensuring(Effect.sync(() => admin.thaw(idle!.pid))))
        yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.length === 1 && bs[0]!.pid !== idle!.pid,
            { timeoutMs: 5_000, message: "the silent backend was not replaced" }
          )
        )
        // A live idle connection passes the same check and stays.
        const replacement = (yield* Effect.promise(() => admin.backends(app)))[0]!.pid
        yield* eventually(pool.stats, (stats) => stats.counters.validated >= 3, "further background checks")
        expect((yield* pool.stats).counters.validationFailures).toBe(1)
        expect((yield* Effect.promise(() => admin.backends(app))).map((b) => b.pid)).toEqual([replacement])
      })
  )

  it.scopedLive("a recently used connection is handed out without a check", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("health-fresh")
      const { pool, sql } = yield* open(configFor(url, app, { maxConnections: 1, validateIdleAfter: "10 seconds" }))
      for (let i = 0; i < 5; i++) yield* sql`select 1`
      expect((yield* pool.stats).counters.validated).toBe(0)
    })
  )

  it.scopedLive("killed idle backends are replaced and minConnections is kept; the next borrower gets a live one", () =>
    Effect.gen(function* () {
      const app = uniqueAppName("health-killed")
      const admin = yield* scopedAdmin(url)
      yield* open(configFor(url, app, { maxConnections: 4, minConnections: 2 }))
      const { pool, sql } = yield* open(configFor(url, `${app}-b`, { maxConnections: 2, minConnections: 2 }))
      const idle = yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(`${app}-b`),
          (bs) => bs.length === 2,
          { timeoutMs: 5_000, message: "minConnections never reached" }
        )
      )
      const killed = idle.map((b) => b.pid)
      yield* Effect.promise(() =>
        admin.query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", [killed])
      )
      // Every statement right after the kill works, on a backend that was not killed.
      // The pool drops a connection as soon as its socket closes; a statement sent in the instant before that
      // fails with 57P01 (pg-warden cannot know whether it ran, so it is not run again). Wait for the close.
      yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(`${app}-b`),
          (bs) => !bs.some((b) => killed.includes(b.pid)),
          { timeoutMs: 5_000, message: "the killed backends are still on the server" }
        )
      )
      yield* eventually(
        pool.audit,
        (report) =>
          report.pool.idle.length + report.pool.leased.length === 2 &&
          report.pool.idle.every((p) => !killed.includes(p)),
        "the pool dropped the gone connections and holds two others"
      )
      for (let i = 0; i < 5; i++) {
        const pid = yield* backendPid(sql)
        expect(killed).not.toContain(pid)
      }
      const refilled = yield* Effect.promise(() =>
        admin.waitFor(
          () => admin.backends(`${app}-b`),
          (bs) => bs.length === 2 && bs.every((b) => !killed.includes(b.pid)),
          { timeoutMs: 5_000, message: "minConnections not refilled after the kill" }
        )
      )
      expect(refilled).toHaveLength(2)
    })
  )
})
