/**
 * The pool: a LIFO free list, a FIFO queue of waiters with direct hand-off to the oldest
 * one, and a state per session (connecting → idle ⇄ leased → releasing → closed).
 *
 * Lock rules (JavaScript is single-threaded, so "atomic" means "no await in between"):
 * - a session is in exactly one of `idle`, `leased`, `releasing` (or gone);
 * - a waiter is served at most once; if its fiber is interrupted after being served, the
 *   session it was given goes back through `checkIn` (never lost);
 * - connection attempts belong to the pool, not to the waiter that caused them: a waiter
 *   that leaves while its connection is being made does not abandon the connection.
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import { type PoolSnapshot, sqlError, sqlState } from "../WardenError.js"
import { type ReleaseOutcome, Session, type SessionConfig } from "./session.js"

export interface PoolConfig {
  readonly session: SessionConfig
  readonly maxConnections: number
  readonly minConnections: number
  readonly acquireTimeoutMs: number
  readonly idleTimeoutMs: number
  /** 0 = unlimited. Each session gets up to 10% less, at random, so they do not expire together. */
  readonly maxLifetimeMs: number
}

/** Counters of everything the pool did, for stats and tests. */
export interface PoolCounters {
  created: number
  connectFailures: number
  acquired: number
  acquireTimeouts: number
  waitersInterrupted: number
  reused: number
  rolledBack: number
  cancelled: number
  closed: number
  terminated: number
  lostWhileIdle: number
  retiredIdle: number
  retiredExpired: number
}

interface Waiter {
  state: "waiting" | "served" | "cancelled" | "returned"
  session: Session | undefined
  resume: ((effect: Effect.Effect<Session, SqlError>) => void) | undefined
  timer: ReturnType<typeof setTimeout> | undefined
}

const emptyCounters = (): PoolCounters => ({
  created: 0,
  connectFailures: 0,
  acquired: 0,
  acquireTimeouts: 0,
  waitersInterrupted: 0,
  reused: 0,
  rolledBack: 0,
  cancelled: 0,
  closed: 0,
  terminated: 0,
  lostWhileIdle: 0,
  retiredIdle: 0,
  retiredExpired: 0
})

export class Pool {
  readonly config: PoolConfig
  readonly counters: PoolCounters = emptyCounters()
  private readonly idle: Array<Session> = []
  private readonly leased = new Set<Session>()
  private readonly releasing = new Set<Session>()
  private waiters: Array<Waiter> = []
  private waitersHead = 0
  /** Waiters still in the "waiting" state (the queue may hold cancelled ones until compaction). */
  private liveWaiters = 0
  /** Sessions outside the pool's count (LISTEN), closed with the pool all the same. */
  private readonly dedicated = new Set<Session>()
  private connecting = 0
  private readonly connectAborts = new Set<() => void>()
  private readonly background = new Set<Promise<unknown>>()
  private maintenance: ReturnType<typeof setInterval> | undefined
  private startupParameters: SessionConfig["startupParameters"]
  closed = false

  constructor(config: PoolConfig) {
    this.config = config
    this.startupParameters = config.session.startupParameters
    const interval = Math.max(50, Math.min(1000, Math.floor(config.idleTimeoutMs / 2)))
    this.maintenance = setInterval(() => this.maintain(), interval)
    this.maintenance.unref()
    this.maintain()
  }

  // ---------------------------------------------------------------------------
  // Introspection

  get waiting(): number {
    return this.liveWaiters
  }

  get total(): number {
    return this.idle.length + this.leased.size + this.releasing.size + this.connecting
  }

  snapshot(): PoolSnapshot {
    return {
      total: this.total,
      idle: this.idle.length,
      inUse: this.leased.size,
      waiting: this.waiting,
      connecting: this.connecting,
      releasing: this.releasing.size,
      maxConnections: this.config.maxConnections
    }
  }

  /** Backend PIDs of every session the pool holds, by state. */
  pids(): {
    readonly idle: ReadonlyArray<number>
    readonly leased: ReadonlyArray<number>
    releasing: ReadonlyArray<number>
  } {
    return {
      idle: this.idle.map((s) => s.pid),
      leased: [...this.leased].map((s) => s.pid),
      releasing: [...this.releasing].map((s) => s.pid)
    }
  }

  // ---------------------------------------------------------------------------
  // Acquisition

  /**
   * Takes a session. Must run in an uninterruptible region; only the wait for a session is
   * made interruptible, through `restore`. The caller owns the session once this succeeds
   * and must hand it to `release`.
   */
  acquire(
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<Session, SqlError> {
    return Effect.suspend(() => {
      if (this.closed) return Effect.fail(this.closedError())
      const session = this.takeIdle()
      if (session !== undefined) return Effect.succeed(session)
      const waiter: Waiter = { state: "waiting", session: undefined, resume: undefined, timer: undefined }
      this.waiters.push(waiter)
      this.liveWaiters++
      waiter.timer = setTimeout(() => this.timeOut(waiter), this.config.acquireTimeoutMs)
      this.grow()
      return restore(
        Effect.async<Session, SqlError>((resume) => {
          if (waiter.state === "served") {
            resume(Effect.succeed(waiter.session!))
            return
          }
          waiter.resume = resume
          return Effect.sync(() => this.abandon(waiter))
        })
      ).pipe(Effect.onInterrupt(() => Effect.sync(() => this.abandon(waiter))))
    })
  }

  private takeIdle(): Session | undefined {
    const now = Date.now()
    while (this.idle.length > 0) {
      const session = this.idle.pop()!
      if (session.lost !== undefined || session.expiresAt <= now || !session.clean) {
        this.retire(session, session.expiresAt <= now ? "expired" : "lost")
        continue
      }
      this.leased.add(session)
      this.counters.acquired++
      return session
    }
    return undefined
  }

  /** A waiter left (interrupted). If it had already been served, the session goes back. */
  private abandon(waiter: Waiter): void {
    if (waiter.state === "waiting") {
      this.leave(waiter)
      this.counters.waitersInterrupted++
    } else if (waiter.state === "served") {
      waiter.state = "returned"
      const session = waiter.session!
      this.leased.delete(session)
      this.counters.acquired--
      this.checkIn(session)
    }
  }

  private timeOut(waiter: Waiter): void {
    if (waiter.state !== "waiting") return
    this.leave(waiter)
    this.counters.acquireTimeouts++
    waiter.resume?.(
      Effect.fail(
        sqlError("AcquireTimeout", `no connection became available within ${this.config.acquireTimeoutMs} ms`, {
          snapshot: this.snapshot()
        })
      )
    )
  }

  private nextWaiter(): Waiter | undefined {
    while (this.waitersHead < this.waiters.length) {
      const waiter = this.waiters[this.waitersHead]!
      this.waiters[this.waitersHead] = undefined as unknown as Waiter
      this.waitersHead++
      if (waiter.state === "waiting") {
        this.liveWaiters--
        clearTimeout(waiter.timer)
        this.compactWaiters()
        return waiter
      }
    }
    this.compactWaiters()
    return undefined
  }

  /** A waiter stops waiting without being served (interrupted, timed out). */
  private leave(waiter: Waiter): void {
    waiter.state = "cancelled"
    this.liveWaiters--
    clearTimeout(waiter.timer)
    this.compactWaiters()
  }

  private compactWaiters(): void {
    if (this.waitersHead === this.waiters.length) {
      this.waiters = []
      this.waitersHead = 0
    } else if (this.waitersHead > 1024 && this.waitersHead * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.waitersHead)
      this.waitersHead = 0
    }
  }

  /** A clean session becomes available: hand it to the oldest waiter, or put it on the free list. */
  private checkIn(session: Session): void {
    if (this.closed || session.lost !== undefined) {
      this.retire(session, "closing")
      return
    }
    const waiter = this.nextWaiter()
    if (waiter !== undefined) {
      waiter.state = "served"
      waiter.session = session
      this.leased.add(session)
      this.counters.acquired++
      waiter.resume?.(Effect.succeed(session))
      return
    }
    session.idleSince = Date.now()
    this.idle.push(session)
  }

  /** Opens connections for waiters that no pending connection will serve, up to the maximum. */
  private grow(): void {
    if (this.closed) return
    let wanted = this.liveWaiters - this.connecting
    while (wanted > 0 && this.total < this.config.maxConnections) {
      this.spawnConnect()
      wanted--
    }
  }

  private spawnConnect(): void {
    this.connecting++
    const config: SessionConfig = { ...this.config.session, startupParameters: this.startupParameters }
    const abort = Session.connect(config, (error, session) => {
      this.connectAborts.delete(abort)
      this.connecting--
      if (error !== undefined || session === undefined) {
        if (this.dropUnsupportedParameter(error)) {
          this.grow()
          return
        }
        this.counters.connectFailures++
        // The oldest waiter learns why; the others keep waiting for their own attempts.
        const waiter = this.nextWaiter()
        if (waiter !== undefined) {
          waiter.state = "cancelled"
          waiter.resume?.(Effect.fail(connectError(error, this.config.session.connectTimeoutMs)))
        }
        return
      }
      this.counters.created++
      if (this.config.maxLifetimeMs > 0) {
        session.expiresAt = session.createdAt + this.config.maxLifetimeMs * (1 - Math.random() * 0.1)
      }
      session.onLost = (s) => this.onLost(s)
      this.checkIn(session)
    })
    this.connectAborts.add(abort)
  }

  /**
   * PostgreSQL before 14 has no `client_connection_check_interval`: it refuses the startup
   * packet with 42704. Drop the parameter and try again rather than fail.
   */
  private dropUnsupportedParameter(error: unknown): boolean {
    if (sqlState(error) !== "42704") return false
    const message = String((error as Error).message ?? "")
    const remaining = this.startupParameters.filter(([name]) => !message.includes(`"${name}"`))
    if (remaining.length === this.startupParameters.length) return false
    this.startupParameters = remaining
    return true
  }

  // ---------------------------------------------------------------------------
  // Release

  /**
   * Gives a session back. Runs the release protocol when the session is not verifiably
   * clean; the returned effect always completes within the cleanup deadlines. Must be run
   * uninterruptibly (it is a finalizer).
   */
  release(session: Session): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (!this.leased.delete(session)) return Effect.void // already taken back by shutdown
      if (!this.closed && session.clean && session.expiresAt > Date.now()) {
        if (session.cancelledDuringLease) {
          session.cancelledDuringLease = false
          this.counters.cancelled++
        } else {
          this.counters.reused++
        }
        this.checkIn(session)
        return Effect.void
      }
      return Effect.promise(() => this.runRelease(session))
    })
  }

  private async runRelease(session: Session): Promise<void> {
    this.releasing.add(session)
    let outcome: ReleaseOutcome
    try {
      outcome = await session.release(() => !this.closed && session.expiresAt > Date.now())
    } finally {
      this.releasing.delete(session)
    }
    this.count(outcome)
    if (outcome === "closed" || outcome === "terminated") {
      this.grow()
    } else {
      this.checkIn(session)
    }
  }

  private count(outcome: ReleaseOutcome): void {
    this.counters[outcome]++
  }

  /** An idle session whose socket broke (server restart, admin kill): drop it. */
  private onLost(session: Session): void {
    const index = this.idle.indexOf(session)
    if (index < 0) return
    this.idle.splice(index, 1)
    this.counters.lostWhileIdle++
    this.track(session.terminate())
    this.grow()
  }

  private retire(session: Session, why: "expired" | "idle" | "lost" | "closing"): void {
    if (why === "expired") this.counters.retiredExpired++
    if (why === "idle") this.counters.retiredIdle++
    if (why === "lost") this.counters.lostWhileIdle++
    this.track(session.clean ? session.close() : session.terminate())
  }

  private track(work: Promise<unknown>): void {
    this.background.add(work)
    work.finally(() => this.background.delete(work))
  }

  /** Periodic: retire expired and long-idle sessions, keep `minConnections` open. */
  private maintain(): void {
    if (this.closed) return
    const now = Date.now()
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const session = this.idle[i]!
      const expired = session.expiresAt <= now
      const idleTooLong = now - session.idleSince > this.config.idleTimeoutMs && this.total > this.config.minConnections
      if (expired || idleTooLong) {
        this.idle.splice(i, 1)
        this.retire(session, expired ? "expired" : "idle")
      }
    }
    while (this.total < this.config.minConnections) this.spawnConnect()
    this.grow()
  }

  // ---------------------------------------------------------------------------
  // Dedicated sessions

  /**
   * A session outside the pool's count, for LISTEN: connected interruptibly within the
   * connect deadline, closed with `closeDedicated` or, at the latest, with the pool.
   */
  openDedicated(): Effect.Effect<Session, SqlError> {
    return Effect.async<Session, SqlError>((resume) => {
      if (this.closed) {
        resume(Effect.fail(this.closedError()))
        return
      }
      const config: SessionConfig = { ...this.config.session, startupParameters: this.startupParameters }
      const abort = Session.connect(config, (error, session) => {
        this.connectAborts.delete(abort)
        if (error !== undefined || session === undefined) {
          resume(Effect.fail(connectError(error, config.connectTimeoutMs)))
        } else if (this.closed) {
          this.track(session.terminate())
          resume(Effect.fail(this.closedError()))
        } else {
          this.dedicated.add(session)
          resume(Effect.succeed(session))
        }
      })
      this.connectAborts.add(abort)
      return Effect.sync(abort)
    })
  }

  closeDedicated(session: Session): Effect.Effect<void> {
    return Effect.promise(() => {
      this.dedicated.delete(session)
      session.onLost = undefined
      return session.lost === undefined && session.settled ? session.close() : session.terminate()
    })
  }

  // ---------------------------------------------------------------------------
  // Shutdown

  /**
   * Bounded shutdown: waiters fail, connection attempts are aborted, idle sessions close,
   * leased sessions are revoked (no new statement is sent on them), then cancelled, rolled
   * back and closed, or terminated. Nothing leased from a closed pool can commit afterwards.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.maintenance)
    for (let waiter = this.nextWaiter(); waiter !== undefined; waiter = this.nextWaiter()) {
      waiter.state = "cancelled"
      waiter.resume?.(Effect.fail(this.closedError()))
    }
    for (const abort of [...this.connectAborts]) abort()
    for (const session of this.dedicated) this.track(session.terminate())
    this.dedicated.clear()
    const idle = this.idle.splice(0)
    for (const session of idle) this.track(session.close())
    for (const session of [...this.leased]) {
      this.leased.delete(session)
      session.revoked = "PoolClosed: the pool was closed while this connection was in use"
      this.track(this.runRelease(session))
    }
    while (this.background.size > 0) await Promise.all([...this.background])
  }

  private closedError(): SqlError {
    return sqlError("PoolClosed", "the pool is closed", { snapshot: this.snapshot() })
  }
}

const connectError = (error: unknown, timeoutMs: number): SqlError => {
  const message = String((error as Error | undefined)?.message ?? error)
  if (/timeout|timed out/i.test(message) && sqlState(error) === undefined) {
    return sqlError("ConnectTimeout", `could not connect within ${timeoutMs} ms: ${message}`, { cause: error })
  }
  return sqlError("ConnectFailed", `could not connect: ${message}`, { cause: error })
}
