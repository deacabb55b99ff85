/**
 * The pool alone, over stub members (no database): FIFO fairness, the hand-off race, shutdown with
 * leased members, idle timeout and lifetime, and C2 by construction: a cleanup step that never ends
 * is stopped by the outer deadline, which aborts the member.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { Pool, type PoolConfig } from "../src/core/pool.js"
import type { ReleaseOutcome } from "../src/core/session.js"
import * as Core from "../src/internal/effect.js"
import * as WardenError from "../src/WardenError.js"
import { StubMember } from "./support/stub-member.js"

/** A stub member whose dealings with the pool are recorded. */
class Stub extends StubMember {
  /** What `release` does: resolve at once with an outcome, or never. */
  releaseWith: ReleaseOutcome | "never" = "reused"
  readonly events: Array<string> = []
  override release(): Promise<ReleaseOutcome> {
    this.events.push("release")
    const outcome = this.releaseWith
    // The deliberate bug: a cleanup step with no timer of its own that never finishes.
    return outcome === "never" ? new Promise<never>(() => {}) : Promise.resolve(outcome)
  }
  override close(): Promise<void> {
    this.events.push("close")
    return Promise.resolve()
  }
  override terminate(): Promise<void> {
    this.events.push("terminate")
    return Promise.resolve()
  }
  override abort(): void {
    this.events.push("abort")
    this.lost = new Error("aborted")
  }
}

const deadlines = { cancel: 20, drain: 20, rollback: 20, reset: 20, terminate: 20 }

const makePool = (overrides: Partial<Omit<PoolConfig, "session">> = {}) => {
  const members: Array<Stub> = []
  const pool = new Pool<Stub>(
    {
      session: {
        client: {},
        applicationName: "pool-stub",
        connectTimeoutMs: 1_000,
        deadlines,
        startupParameters: [],
        statementCacheSize: 0,
        cancelProbe: false,
        alwaysReset: false
      },
      maxConnections: 2,
      minConnections: 0,
      acquireTimeoutMs: 5_000,
      idleTimeoutMs: 60_000,
      maxLifetimeMs: 0,
      ...overrides
    },
    (_config, onDone) => {
      const member = new Stub(members.length + 1)
      members.push(member)
      queueMicrotask(() => onDone(undefined, member))
      return () => {}
    }
  )
  return { pool, members }
}

/** A member for the rest of the scope, acquired the way `reserve` does it. */
const lease = (pool: Pool<Stub>) =>
  Effect.uninterruptibleMask((restore) => Core.acquire(pool, restore)) as Effect.Effect<Stub, unknown>

const waitUntil = (predicate: () => boolean, timeoutMs = 2_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (!predicate()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage("condition not reached in time")
      yield* Effect.sleep("5 millis")
    }
  })

describe("pool over stub members", () => {
  it.live("serves waiters in FIFO order, handing each released member to the oldest waiter", () =>
    Effect.gen(function* () {
      const { pool } = makePool({ maxConnections: 1 })
      const holder = yield* lease(pool)
      const served: Array<number> = []
      const waiters = yield* Effect.forEach([1, 2, 3, 4], (n) =>
        Effect.fork(
          Effect.flatMap(lease(pool), (member) =>
            Effect.sync(() => served.push(n)).pipe(Effect.zipRight(Core.release(pool, member)))
          )
        )
      )
      yield* waitUntil(() => pool.waiting === 4)
      yield* Core.release(pool, holder)
      yield* Effect.forEach(waiters, Fiber.join)
      expect(served).toEqual([1, 2, 3, 4])
      expect(pool.snapshot()).toMatchObject({ total: 1, idle: 1, inUse: 0, waiting: 0 })
      yield* Effect.promise(() => pool.close())
    })
  )

  it.live("a waiter interrupted right after being served gives its member back (no slot lost)", () =>
    Effect.gen(function* () {
      const { pool, members } = makePool({ maxConnections: 1 })
      for (let round = 0; round < 50; round++) {
        const holder = yield* lease(pool)
        const waiter = yield* Effect.fork(lease(pool))
        yield* waitUntil(() => pool.waiting === 1)
        // Hand-off and interruption in the same tick: the waiter is served, then interrupted before it resumes.
        yield* Effect.sync(() => Effect.runFork(Core.release(pool, holder)))
        yield* Fiber.interrupt(waiter)
        yield* waitUntil(() => pool.snapshot().inUse === 0 || (pool.snapshot().inUse === 1 && pool.waiting === 0))
        const exit = yield* Fiber.await(waiter)
        if (Exit.isSuccess(exit)) yield* Core.release(pool, exit.value)
        yield* waitUntil(() => pool.snapshot().idle === 1)
      }
      expect(members).toHaveLength(1)
      expect(pool.snapshot()).toMatchObject({ total: 1, idle: 1, inUse: 0, waiting: 0 })
      yield* Effect.promise(() => pool.close())
    })
  )

  it.live("shutdown fails the waiters, revokes and releases the leased members, closes the idle ones", () =>
    Effect.gen(function* () {
      const { pool, members } = makePool({ maxConnections: 2 })
      const a = yield* lease(pool)
      const b = yield* lease(pool)
      yield* Core.release(pool, b)
      const again = yield* lease(pool) // b again, from the free list
      expect(again).toBe(b)
      yield* Core.release(pool, again)
      const waiter = yield* Effect.fork(Effect.flatMap(lease(pool), () => lease(pool)))
      yield* waitUntil(() => pool.waiting === 1)
      yield* Effect.promise(() => pool.close())
      const exit = yield* Fiber.await(waiter)
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        expect(WardenError.fromSqlError(error)?.reason).toBe("PoolClosed")
      }
      expect(a.revoked).toMatch(/PoolClosed/)
      expect(a.events).toContain("release")
      expect(members.every((m) => m.events.includes("close") || m.events.includes("release"))).toBe(true)
      expect(pool.snapshot()).toMatchObject({ total: 0, idle: 0, inUse: 0 })
    })
  )

  it.live("idle members above the minimum are retired after the idle timeout, the minimum is kept", () =>
    Effect.gen(function* () {
      const { pool, members } = makePool({ maxConnections: 3, minConnections: 1, idleTimeoutMs: 100 })
      const leased = yield* Effect.all([lease(pool), lease(pool), lease(pool)])
      for (const member of leased) yield* Core.release(pool, member)
      expect(pool.snapshot().idle).toBe(3)
      yield* waitUntil(() => pool.snapshot().total === 1, 3_000)
      expect(pool.counters.retiredIdle).toBe(2)
      expect(members.filter((m) => m.events.includes("close"))).toHaveLength(2)
      yield* Effect.promise(() => pool.close())
    })
  )

  it.live("a member past its lifetime (up to 10 % less, at random) is retired and replaced", () =>
    Effect.gen(function* () {
      const { pool, members } = makePool({ maxConnections: 1, maxLifetimeMs: 150 })
      const first = yield* lease(pool)
      expect(first.expiresAt - first.createdAt).toBeGreaterThanOrEqual(135)
      expect(first.expiresAt - first.createdAt).toBeLessThanOrEqual(150)
      yield* Core.release(pool, first)
      yield* Effect.sleep("200 millis")
      const second = yield* lease(pool)
      expect(second).not.toBe(first)
      expect(first.events).toContain("close")
      expect(pool.counters.retiredExpired).toBeGreaterThanOrEqual(1)
      expect(members).toHaveLength(2)
      yield* Core.release(pool, second)
      yield* Effect.promise(() => pool.close())
    })
  )

  it.live("a move the state machine does not allow fails loudly (a pg-warden bug, never silently)", () =>
    Effect.gen(function* () {
      const { pool } = makePool({ maxConnections: 1 })
      const member = yield* lease(pool)
      expect(member.place).toBe("leased")
      yield* Core.release(pool, member)
      expect(member.place).toBe("idle")
      expect(() => pool.move(member, "dedicated")).toThrow(/cannot move from idle to dedicated/)
      expect(member.place).toBe("idle")
      expect(pool.snapshot()).toMatchObject({ idle: 1, inUse: 0, releasing: 0 })
      yield* Effect.promise(() => pool.close())
      expect(member.place).toBe("gone")
      expect(() => pool.move(member, "idle")).toThrow(/cannot move from gone to idle/)
    })
  )

  it.live("C2 by construction: a release that never ends is stopped by the outer deadline and aborted", () =>
    Effect.gen(function* () {
      const { pool } = makePool({ maxConnections: 1 })
      const member = yield* lease(pool)
      member.clean = false // not clean: the release protocol runs
      member.releaseWith = "never"
      const started = Date.now()
      yield* Core.release(pool, member)
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(pool.outerMs - 5)
      expect(took).toBeLessThan(pool.outerMs + 1_000)
      expect(member.events).toEqual(["release", "abort"])
      expect(pool.counters).toMatchObject({ overran: 1, terminated: 1, reused: 0 })
      // The slot is free again: the next lease gets a new member.
      member.clean = true
      const next = yield* lease(pool)
      expect(next).not.toBe(member)
      yield* Core.release(pool, next)
      yield* Effect.promise(() => pool.close())
    })
  )

  it.live("C2 by construction: shutdown with a leased member whose release never ends still finishes", () =>
    Effect.gen(function* () {
      const { pool } = makePool({ maxConnections: 2 })
      const stuck = yield* lease(pool)
      stuck.releaseWith = "never"
      const fine = yield* lease(pool)
      const started = Date.now()
      yield* Effect.promise(() => pool.close())
      const took = Date.now() - started
      expect(took).toBeLessThan(2 * pool.outerMs + 1_000)
      expect(stuck.events).toContain("abort")
      expect(fine.events).toContain("release")
      expect(fine.events).not.toContain("abort")
    })
  )
})
