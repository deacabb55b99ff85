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

import { audit as runAudit } from "./audit.js"
import { CoreError, describeHolder, type Holder, type HolderReport, type PoolSnapshot, sqlState } from "./errors.js"
import { tell } from "./events.js"
import { type InFlight, type ReleaseOutcome, Session, type SessionConfig, type StatementConfig } from "./session.js"
import { formatStack } from "./stack.js"

/**
 * What the pool needs of a session. `Session` is the real one; the pool-overhead benchmark
 * runs the same pool over stub members, with no database.
 */
/**
 * Where a member is in its pool. `new`: connected, not yet placed; `idle`: on the free list;
 * `leased`: one borrower's; `releasing`: in the release protocol; `dedicated`: outside the pool's
 * count (LISTEN); `gone`: closed or being terminated, never placed again.
 */
export type Place = "new" | "idle" | "leased" | "releasing" | "dedicated" | "gone"

/**
 * The legal moves. `leased → leased` is the direct hand-off of a released session to the oldest
 * waiter; `releasing → leased` the same after the release protocol.
 */
const MOVES: Readonly<Record<Place, ReadonlyArray<Place>>> = {
  new: ["idle", "leased", "dedicated", "gone"],
  idle: ["leased", "releasing", "gone"],
  leased: ["idle", "leased", "releasing", "gone"],
  releasing: ["idle", "leased", "gone"],
  dedicated: ["gone"],
  gone: []
}

export interface Member {
  /** Changed only by `Pool.move`. */
  place: Place
  lost: unknown
  revoked: string | undefined
  expiresAt: number
  idleSince: number
  readonly createdAt: number
  readonly pid: number
  cancelledDuringLease: boolean
  beginPending: boolean
  onLost: ((member: any) => void) | undefined
  readonly clean: boolean
  readonly settled: boolean
  /** When the current borrower got the member (set by `Pool.move` to `leased`). */
  leasedAt: number
  /** Who the current borrower is, when its edition said (set by the pool as it hands the member over). */
  holder: Holder | undefined
  /** Leak detection warned about the current lease already. */
  leakReported: boolean
  /** The statement the member is running now, if any. */
  running(): string | undefined
  /** When the pool last checked that the member answers (0: never); see `validateIdleAfterMs`. */
  validatedAt: number
  /** The server confirmed at connect that `pid` is this session's backend (not behind a proxy's own keys). */
  readonly pidVerified?: boolean
  /** Whether the member still answers, within `timeoutMs` (a long-idle one, before it is handed out). */
  validate(timeoutMs: number): Promise<boolean>
  release(keep: () => boolean): Promise<ReleaseOutcome>
  close(): Promise<void>
  terminate(): Promise<void>
  /**
   * The last resort when a cleanup overran its outer deadline: destroy the socket now and have the
   * server end the backend without waiting for it. Cannot hang.
   */
  abort(): void
}

/** Slack past the sum of the cleanup deadlines before a cleanup is taken as stuck. */
export const OUTER_MARGIN_MS = 500

/**
 * The outer deadline of every cleanup: the sum of the deadlines of its steps, plus a margin. Each
 * step has a timer of its own; this one does not depend on any of them.
 */
export const outerDeadlineMs = (deadlines: SessionConfig["deadlines"]): number =>
  deadlines.cancel + deadlines.drain + deadlines.rollback + deadlines.reset + deadlines.terminate + OUTER_MARGIN_MS

/** Opens a member; the returned function aborts the attempt. */
export type Connector<S> = (config: SessionConfig, onDone: (error: unknown, session?: S) => void) => () => void

export interface PoolConfig {
  readonly session: SessionConfig
  readonly maxConnections: number
  readonly minConnections: number
  readonly acquireTimeoutMs: number
  readonly idleTimeoutMs: number
  /** 0 = unlimited. Each session gets up to 10% less, at random, so they do not expire together. */
  readonly maxLifetimeMs: number
  /**
   * An idle session idle longer than this is validated (one round trip, within the reset deadline)
   * before it is handed out; one that does not answer is terminated and replaced. 0 = never.
   */
  readonly validateIdleAfterMs?: number | undefined
  /** Run the audit this often and tell `events.audited` what it found (0 = off). */
  readonly auditIntervalMs?: number | undefined
  /** A lease held longer than this is reported once to `onLeak` (0 = off). */
  readonly leakDetectionMs?: number | undefined
  /** Told about a lease held longer than `leakDetectionMs`; must not throw (what it throws is dropped). */
  readonly onLeak?: ((holder: HolderReport) => void) | undefined
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
  reset: number
  cancelled: number
  closed: number
  terminated: number
  lostWhileIdle: number
  retiredIdle: number
  retiredExpired: number
  /** Cleanups stopped by the outer deadline (a step overran its own): the member was aborted. */
  overran: number
  /** Long-idle sessions validated before being handed out, and those that did not answer (terminated). */
  validated: number
  validationFailures: number
}

/**
 * A fiber waiting for a session. Served at most once, in FIFO order; `serve` and `fail` are
 * plain callbacks so that a pooled statement can start on the session in the same tick.
 */
export interface Waiter<S> {
  state: "waiting" | "served" | "cancelled" | "returned"
  /** Who is waiting; becomes the session's holder when it is served. */
  readonly holder: Holder | undefined
  session: S | undefined
  failure: CoreError | undefined
  readonly deadline: number
  serve: ((session: S) => void) | undefined
  fail: ((error: CoreError) => void) | undefined
}

const emptyCounters = (): PoolCounters => ({
  created: 0,
  connectFailures: 0,
  acquired: 0,
  acquireTimeouts: 0,
  waitersInterrupted: 0,
  reused: 0,
  rolledBack: 0,
  reset: 0,
  cancelled: 0,
  closed: 0,
  terminated: 0,
  lostWhileIdle: 0,
  retiredIdle: 0,
  retiredExpired: 0,
  overran: 0,
  validated: 0,
  validationFailures: 0
})

/** A pooled statement's lease: no fiber to name (it holds the session only while its statement runs). */
const STATEMENT_HOLDER: Holder = { kind: "statement" }

const holderReport = (member: Member, now: number): HolderReport => {
  const holder = member.holder
  const running = member.running()
  return {
    kind: holder?.kind ?? "statement",
    ...(holder?.fiber !== undefined ? { fiber: holder.fiber } : {}),
    ...(holder?.span !== undefined ? { span: holder.span } : {}),
    ...(holder?.site !== undefined ? { stack: formatStack(holder.site) } : {}),
    pid: member.pid,
    heldMs: now - member.leasedAt,
    ...(running !== undefined ? { running } : {})
  }
}

export class Pool<S extends Member = Session> {
  readonly config: PoolConfig
  readonly counters: PoolCounters = emptyCounters()
  private readonly idle: Array<S> = []
  private readonly leased = new Set<S>()
  private readonly releasing = new Set<S>()
  private waiters: Array<Waiter<S>> = []
  private waitersHead = 0
  /** Waiters still in the "waiting" state (the queue may hold cancelled ones until compaction). */
  private liveWaiters = 0
  /** Sessions outside the pool's count (LISTEN), closed with the pool all the same. */
  private readonly dedicated = new Set<S>()
  private connecting = 0
  /** Connection attempts failed in a row, and when the next refill to `minConnections` may start. */
  private failedConnects = 0
  private refillAfter = 0
  private readonly connectAborts = new Set<() => void>()
  private readonly background = new Set<Promise<unknown>>()
  private maintenance: ReturnType<typeof setInterval> | undefined
  private auditTimer: ReturnType<typeof setInterval> | undefined
  private auditing: (() => void) | undefined
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private startupParameters: SessionConfig["startupParameters"]
  closed = false
  /** See `outerDeadlineMs`. */
  readonly outerMs: number

  private readonly connector: Connector<S>

  constructor(config: PoolConfig, connector?: Connector<S>) {
    this.config = config
    this.connector = connector ?? (Session.connect as unknown as Connector<S>)
    this.startupParameters = config.session.startupParameters
    this.outerMs = outerDeadlineMs(config.session.deadlines)
    const leakMs = config.leakDetectionMs ?? 0
    const interval = Math.max(
      50,
      Math.min(
        1000,
        Math.floor(config.idleTimeoutMs / 2),
        leakMs > 0 ? Math.floor(leakMs / 4) : Number.POSITIVE_INFINITY
      )
    )
    this.maintenance = setInterval(() => this.maintain(), interval)
    this.maintenance.unref()
    const auditMs = config.auditIntervalMs ?? 0
    if (auditMs > 0) {
      this.auditTimer = setInterval(() => this.auditNow(), auditMs)
      this.auditTimer.unref()
    }
    this.maintain()
  }

  // ---------------------------------------------------------------------------
  // The one place a member changes place (and container)

  /**
   * Moves a member, keeping the containers in step with `member.place`. A move `MOVES` does not
   * allow is a bug in pg-warden, and fails loudly.
   */
  move(member: S, to: Place): void {
    const from = member.place
    if (!MOVES[from].includes(to)) {
      throw new Error(`pg-warden bug: a session (backend ${member.pid}) cannot move from ${from} to ${to}`)
    }
    switch (from) {
      case "idle": {
        const last = this.idle.length - 1
        if (this.idle[last] === member) this.idle.pop()
        else this.idle.splice(this.idle.indexOf(member), 1)
        break
      }
      case "leased":
        this.leased.delete(member)
        member.holder = undefined
        break
      case "releasing":
        this.releasing.delete(member)
        break
      case "dedicated":
        this.dedicated.delete(member)
        break
    }
    switch (to) {
      case "idle":
        member.idleSince = Date.now()
        this.idle.push(member)
        break
      case "leased":
        this.leased.add(member)
        member.leasedAt = Date.now()
        member.leakReported = false
        break
      case "releasing":
        this.releasing.add(member)
        break
      case "dedicated":
        this.dedicated.add(member)
        break
    }
    member.place = to
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
      maxConnections: this.config.maxConnections,
      holders: this.holders()
    }
  }

  /** The snapshot with every counter, and whether the pool is closed. */
  stats(): PoolSnapshot & { readonly counters: PoolCounters; readonly closed: boolean } {
    return { ...this.snapshot(), counters: { ...this.counters }, closed: this.closed }
  }

  /** The counts the metrics gauge, without building a snapshot. */
  counts(): { readonly idle: number; readonly used: number; readonly pending: number } {
    return { idle: this.idle.length, used: this.leased.size + this.releasing.size, pending: this.liveWaiters }
  }

  /** Who holds the sessions in use, longest-held first. */
  holders(): ReadonlyArray<HolderReport> {
    const now = Date.now()
    return [...this.leased].sort((a, b) => a.leasedAt - b.leasedAt).map((member) => holderReport(member, now))
  }

  /** Backend PIDs of the idle and leased sessions whose PID the server confirmed (what an audit can look for). */
  verifiedPids(): ReadonlyArray<number> {
    const pids: Array<number> = []
    for (const member of this.idle) if (member.pidVerified === true) pids.push(member.pid)
    for (const member of this.leased) if (member.pidVerified === true) pids.push(member.pid)
    return pids
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
  //
  // A session for a scope (reserve, transaction) is taken in steps the caller drives, so that an
  // edition can make only the wait interruptible: `takeIdle` (a session now, or none), `enqueue` (a
  // place in the FIFO queue, served through its `serve` / `fail` callbacks), and `abandon` when the
  // caller stops waiting (or was served but can no longer take the session: it goes back). The
  // caller owns a session once served and must give it back with `release`.

  /**
   * One statement on a pooled session, as a single async step: wait for a session, run the
   * statement, give the session back; `onDone` is called once. Interruption at any point is handled
   * by the statement's own state (see `PooledStatement.interrupt`).
   */
  statement<A>(
    config: StatementConfig,
    onResult: (result: any) => A,
    onDone: (error: CoreError | undefined, value: A | undefined) => void
  ): PooledStatement<A> {
    const op = new PooledStatement(this as unknown as Pool<Session>, config, onResult, onDone)
    op.start()
    return op
  }

  /** A place in the queue of waiters (see "Acquisition" above), for `holder`. */
  enqueue(holder?: Holder): Waiter<S> {
    const waiter: Waiter<S> = {
      state: "waiting",
      holder,
      session: undefined,
      failure: undefined,
      deadline: Date.now() + this.config.acquireTimeoutMs,
      serve: undefined,
      fail: undefined
    }
    this.waiters.push(waiter)
    this.liveWaiters++
    this.armTimer()
    this.grow()
    return waiter
  }

  /** A clean idle session for `holder`, now, or none. */
  takeIdle(holder?: Holder): S | undefined {
    const now = Date.now()
    while (this.idle.length > 0) {
      const session = this.idle[this.idle.length - 1]!
      if (session.lost !== undefined || session.expiresAt <= now || !session.clean) {
        this.retire(session, session.expiresAt <= now ? "expired" : "lost")
        continue
      }
      const validateAfter = this.config.validateIdleAfterMs ?? 0
      if (validateAfter > 0 && now - Math.max(session.idleSince, session.validatedAt) > validateAfter) {
        // Not handed out unchecked: validated in the background, then given to the oldest waiter
        // (perhaps this caller, once it queues) or replaced when it does not answer.
        this.validate(session)
        continue
      }
      this.move(session, "leased")
      session.holder = holder
      this.counters.acquired++
      const events = this.config.session.events
      if (events !== undefined) tell(events.acquired, 0)
      return session
    }
    return undefined
  }

  /** A waiter left (interrupted). If it had already been served, the session goes back. */
  abandon(waiter: Waiter<S>): void {
    if (waiter.state === "waiting") {
      this.leave(waiter)
      this.counters.waitersInterrupted++
    } else if (waiter.state === "served") {
      waiter.state = "returned"
      this.counters.acquired--
      this.checkIn(waiter.session!)
    }
  }

  /**
   * Acquire timeouts: all waiters share one timeout, so FIFO order is deadline order and one
   * timer armed for the oldest waiter is enough.
   */
  private armTimer(): void {
    if (this.timer !== undefined) return
    for (let i = this.waitersHead; i < this.waiters.length; i++) {
      const waiter = this.waiters[i]!
      if (waiter.state !== "waiting") continue
      this.timer = setTimeout(this.expire, Math.max(0, waiter.deadline - Date.now()))
      return
    }
  }

  private readonly expire = (): void => {
    this.timer = undefined
    const now = Date.now()
    for (let i = this.waitersHead; i < this.waiters.length; i++) {
      const waiter = this.waiters[i]!
      if (waiter.state !== "waiting") continue
      if (waiter.deadline > now) break
      // The snapshot is taken while the waiter still counts, so the message shows it waiting.
      const snapshot = this.snapshot()
      const holders = snapshot.holders ?? []
      const error = new CoreError(
        "AcquireTimeout",
        `no connection became available within ${this.config.acquireTimeoutMs} ms` +
          (holders.length > 0
            ? `; held by: ${holders.slice(0, 5).map(describeHolder).join("; ")}${holders.length > 5 ? `; and ${holders.length - 5} more` : ""}`
            : ""),
        undefined,
        snapshot
      )
      this.leave(waiter)
      this.counters.acquireTimeouts++
      tell(this.config.session.events?.timedOut)
      this.failWaiter(waiter, error)
    }
    this.armTimer()
  }

  private failWaiter(waiter: Waiter<S>, error: CoreError): void {
    waiter.failure = error
    waiter.fail?.(error)
  }

  private nextWaiter(): Waiter<S> | undefined {
    while (this.waitersHead < this.waiters.length) {
      const waiter = this.waiters[this.waitersHead]!
      this.waiters[this.waitersHead] = undefined as unknown as Waiter<S>
      this.waitersHead++
      if (waiter.state === "waiting") {
        this.liveWaiters--
        this.compactWaiters()
        return waiter
      }
    }
    this.compactWaiters()
    return undefined
  }

  /** A waiter stops waiting without being served (interrupted, timed out). */
  private leave(waiter: Waiter<S>): void {
    waiter.state = "cancelled"
    this.liveWaiters--
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
  private checkIn(session: S): void {
    if (this.closed || session.lost !== undefined) {
      this.retire(session, "closing")
      this.grow()
      return
    }
    const waiter = this.nextWaiter()
    if (waiter !== undefined) {
      waiter.state = "served"
      waiter.session = session
      this.move(session, "leased")
      session.holder = waiter.holder
      this.counters.acquired++
      const events = this.config.session.events
      if (events !== undefined) tell(events.acquired, Date.now() - (waiter.deadline - this.config.acquireTimeoutMs))
      waiter.serve?.(session)
      return
    }
    this.move(session, "idle")
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
    const started = Date.now()
    const abort = this.connector(config, (error, session) => {
      this.connectAborts.delete(abort)
      this.connecting--
      if (error !== undefined || session === undefined) {
        if (this.dropUnsupportedParameter(error)) {
          this.grow()
          return
        }
        this.counters.connectFailures++
        this.failedConnects++
        this.refillAfter = Date.now() + Math.min(30_000, 100 * 2 ** Math.min(this.failedConnects - 1, 9))
        // The oldest waiter learns why; the others keep waiting for their own attempts.
        const waiter = this.nextWaiter()
        if (waiter !== undefined) {
          waiter.state = "cancelled"
          this.failWaiter(waiter, connectError(error, this.config.session.connectTimeoutMs))
        }
        return
      }
      this.counters.created++
      this.failedConnects = 0
      this.refillAfter = 0
      tell(this.config.session.events?.connected, Date.now() - started)
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
   * Gives a session back: `undefined` when it was verifiably clean and went straight back, otherwise
   * the release protocol, which always completes within the outer deadline. A finalizer: callers
   * must not abandon it halfway.
   */
  release(session: S): Promise<void> | undefined {
    return this.releaseClean(session) ? undefined : this.releaseDirty(session)
  }

  /** The fast path: a verifiably clean session goes straight back to the next waiter or the free list. */
  releaseClean(session: S): boolean {
    if (this.closed || !session.clean || session.revoked !== undefined || session.expiresAt <= Date.now()) return false
    if (session.place !== "leased") return false
    session.beginPending = false
    let outcome: ReleaseOutcome = "reused"
    if (session.cancelledDuringLease) {
      session.cancelledDuringLease = false
      outcome = "cancelled"
    }
    this.counters[outcome]++
    const usedMs = Date.now() - session.leasedAt
    this.checkIn(session)
    // After the check-in, so that the counts it reports include the session's new place.
    const events = this.config.session.events
    if (events !== undefined) tell(events.released, outcome, usedMs)
    return true
  }

  /** The periodic audit: one at a time; what it finds goes to `events.audited`, a failure to `events.auditFailed`. */
  private auditNow(): void {
    if (this.closed || this.auditing !== undefined) return
    this.auditing = runAudit(this as unknown as Pool<S>, (error, report) => {
      this.auditing = undefined
      const events = this.config.session.events
      if (events === undefined) return
      if (report !== undefined) tell(events.audited, report)
      else if (error !== undefined) tell(events.auditFailed, error)
    })
  }

  /**
   * A long-idle session's check: back to the pool when it answers, terminated (and replaced) when not.
   * Run when a borrower would take it, and by the maintenance tick for sessions nobody takes; the
   * session keeps its idle time, so the idle timeout still retires it.
   */
  private validate(session: S): void {
    const idleSince = session.idleSince
    this.move(session, "releasing")
    this.counters.validated++
    const work = this.bounded(session.validate(this.config.session.deadlines.reset), [session], false).then((ok) => {
      if (session.place !== "releasing") return // taken back by shutdown
      if (ok && !this.closed) {
        session.validatedAt = Date.now()
        this.checkIn(session)
        if ((session.place as Place) === "idle") session.idleSince = idleSince
        return
      }
      this.counters.validationFailures++
      this.move(session, "gone")
      this.track(session.terminate())
      this.grow()
      tell(this.config.session.events?.changed)
    })
    this.track(work)
  }

  /** The release protocol, tracked so that shutdown waits for it. */
  releaseDirty(session: S): Promise<void> {
    if (session.place !== "leased") return Promise.resolve() // already taken back by shutdown
    this.move(session, "releasing")
    return this.track(this.runRelease(session))
  }

  private async runRelease(session: S): Promise<void> {
    const usedMs = Date.now() - session.leasedAt
    const outcome = await this.bounded(
      session.release(() => !this.closed && session.revoked === undefined && session.expiresAt > Date.now()),
      [session],
      "terminated" as const
    )
    this.counters[outcome]++
    if (outcome === "closed" || outcome === "terminated") {
      this.move(session, "gone")
      this.grow()
    } else {
      this.checkIn(session)
    }
    const events = this.config.session.events
    if (events !== undefined) tell(events.released, outcome, usedMs)
  }

  /**
   * C2 by construction: `work` (a cleanup) resolves within the outer deadline, whatever its steps do.
   * Past it, `members` are aborted (socket destroyed, backend ended out of band) and `late` is the
   * result. A cleanup that overran is a bug in a step's own deadline; this keeps it from becoming a
   * hang.
   */
  bounded<A>(work: Promise<A>, members: Iterable<S>, late: A, ms = this.outerMs): Promise<A> {
    return new Promise<A>((resolve) => {
      const timer = setTimeout(() => {
        this.counters.overran++
        for (const member of members) member.abort()
        resolve(late)
      }, ms)
      work.then(
        (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        () => {
          clearTimeout(timer)
          for (const member of members) member.abort()
          resolve(late)
        }
      )
    })
  }

  /** An idle session whose socket broke (server restart, admin kill): drop it. */
  private onLost(session: S): void {
    if (session.place !== "idle") return
    this.move(session, "gone")
    this.counters.lostWhileIdle++
    this.track(session.terminate())
    this.grow()
  }

  private retire(session: S, why: "expired" | "idle" | "lost" | "closing"): void {
    this.move(session, "gone")
    if (why === "expired") this.counters.retiredExpired++
    if (why === "idle") this.counters.retiredIdle++
    if (why === "lost") this.counters.lostWhileIdle++
    this.track(session.clean ? session.close() : session.terminate())
  }

  private track<A>(work: Promise<A>): Promise<A> {
    this.background.add(work)
    work.finally(() => this.background.delete(work))
    return work
  }

  /** Periodic: retire expired and long-idle sessions, keep `minConnections` open. */
  private maintain(): void {
    if (this.closed) return
    const now = Date.now()
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const session = this.idle[i]!
      const expired = session.expiresAt <= now
      const idleTooLong = now - session.idleSince > this.config.idleTimeoutMs && this.total > this.config.minConnections
      if (expired || idleTooLong) this.retire(session, expired ? "expired" : "idle")
    }
    // Idle sessions nobody took for a while are checked in the background, so a dead one is replaced
    // before a borrower needs it.
    const validateAfter = this.config.validateIdleAfterMs ?? 0
    if (validateAfter > 0) {
      for (const session of [...this.idle]) {
        if (now - Math.max(session.idleSince, session.validatedAt) > validateAfter) this.validate(session)
      }
    }
    // Refill to minConnections, backing off while connecting fails (0.1 s, doubling, at most 30 s).
    if (now >= this.refillAfter) while (this.total < this.config.minConnections) this.spawnConnect()
    this.grow()
    this.detectLeaks(now)
    tell(this.config.session.events?.changed)
  }

  /** Tells `onLeak`, once per lease, about every lease held longer than `leakDetectionMs`. */
  private detectLeaks(now: number): void {
    const threshold = this.config.leakDetectionMs ?? 0
    const onLeak = this.config.onLeak
    if (threshold <= 0 || onLeak === undefined) return
    for (const member of this.leased) {
      if (member.leakReported || now - member.leasedAt < threshold) continue
      member.leakReported = true
      try {
        onLeak(holderReport(member, now))
      } catch {
        // A reporting hook cannot break the pool.
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Dedicated sessions

  /**
   * A session outside the pool's count, for LISTEN: connected within the connect deadline, closed
   * with `closeDedicated` or, at the latest, with the pool. `onDone` is called once; the returned
   * function aborts the attempt.
   */
  openDedicated(onDone: (error: CoreError | undefined, session?: S) => void): () => void {
    if (this.closed) {
      onDone(this.closedError())
      return () => {}
    }
    const config: SessionConfig = { ...this.config.session, startupParameters: this.startupParameters }
    const abort = this.connector(config, (error, session) => {
      this.connectAborts.delete(abort)
      if (error !== undefined || session === undefined) {
        onDone(connectError(error, config.connectTimeoutMs))
      } else if (this.closed) {
        this.move(session, "gone")
        this.track(session.terminate())
        onDone(this.closedError())
      } else {
        this.move(session, "dedicated")
        onDone(undefined, session)
      }
    })
    this.connectAborts.add(abort)
    return abort
  }

  closeDedicated(session: S): Promise<void> {
    if (session.place === "dedicated") this.move(session, "gone")
    session.onLost = undefined
    return this.bounded(
      session.lost === undefined && session.settled ? session.close() : session.terminate(),
      [session],
      undefined
    )
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
    clearInterval(this.auditTimer)
    this.auditing?.()
    clearTimeout(this.timer)
    for (let waiter = this.nextWaiter(); waiter !== undefined; waiter = this.nextWaiter()) {
      waiter.state = "cancelled"
      this.failWaiter(waiter, this.closedError())
    }
    for (const abort of [...this.connectAborts]) abort()
    const dedicated = [...this.dedicated]
    for (const session of dedicated) {
      this.move(session, "gone")
      this.track(session.terminate())
    }
    const idle = [...this.idle]
    for (const session of idle) {
      this.move(session, "gone")
      this.track(session.close())
    }
    const leased = [...this.leased]
    for (const session of leased) {
      session.revoked = "PoolClosed: the pool was closed while this connection was in use"
      this.releaseDirty(session)
    }
    // Every piece of work above has its own deadline and the releases their outer one; this outer
    // deadline covers the rest (closes of idle sessions, terminates), aborting whatever is still open.
    const everyone = [...dedicated, ...idle, ...leased, ...this.releasing]
    await this.bounded(
      (async () => {
        while (this.background.size > 0) await Promise.all([...this.background])
      })(),
      everyone,
      undefined,
      // Past the releases' own outer deadline: closing an idle session may start as late as that.
      this.outerMs + this.config.session.deadlines.terminate + OUTER_MARGIN_MS
    )
    // Last: the releases above may still have used it to cancel.
    await this.config.session.cancelChannel?.close(this.config.session.deadlines.terminate)
  }

  closedError(): CoreError {
    return new CoreError("PoolClosed", "the pool is closed", undefined, this.snapshot())
  }
}

const connectError = (error: unknown, timeoutMs: number): CoreError => {
  const message = String((error as Error | undefined)?.message ?? error)
  if (/timeout|timed out/i.test(message) && sqlState(error) === undefined) {
    return new CoreError("ConnectTimeout", `could not connect within ${timeoutMs} ms: ${message}`, error)
  }
  if (/unsupported startup parameter/i.test(message)) {
    // PgBouncer before 1.20 refuses the `options` startup parameter, which carries the safety settings.
    return new CoreError(
      "ConnectFailed",
      `could not connect: ${message} (this looks like PgBouncer, which refuses run-time parameters at startup: set pgbouncer: true)`,
      error
    )
  }
  return new CoreError("ConnectFailed", `could not connect: ${message}`, error)
}

/**
 * The state of one pooled statement: waiting → running → (releasing →) done. Interruption
 * looks at the state: a waiter leaves the queue; a running statement is cancelled and its
 * session released through the protocol, and the interruption completes after that.
 */
export class PooledStatement<A> {
  private state: "waiting" | "running" | "releasing" | "done" = "waiting"
  private waiter: Waiter<Session> | undefined = undefined
  private session: Session | undefined = undefined
  private record: InFlight | undefined = undefined
  private cleanup: Promise<void> | undefined = undefined
  private error: CoreError | undefined = undefined
  private value: A | undefined = undefined

  constructor(
    private readonly pool: Pool<Session>,
    private readonly config: StatementConfig,
    private readonly onResult: (result: any) => A,
    private readonly onDone: (error: CoreError | undefined, value: A | undefined) => void
  ) {}

  start(): void {
    const pool = this.pool
    if (pool.closed) {
      this.state = "done"
      this.onDone(pool.closedError(), undefined)
      return
    }
    const session = pool.takeIdle(STATEMENT_HOLDER)
    if (session !== undefined) {
      this.run(session)
      return
    }
    const waiter = pool.enqueue(STATEMENT_HOLDER)
    this.waiter = waiter
    waiter.serve = (session) => this.run(session)
    waiter.fail = (error) => {
      this.state = "done"
      this.onDone(error, undefined)
    }
    if (waiter.state === "served") this.run(waiter.session!)
    else if (waiter.failure !== undefined) waiter.fail(waiter.failure)
  }

  private run(session: Session): void {
    this.state = "running"
    this.session = session
    this.record = session.submit(this.config, this.completed)
  }

  private readonly completed = (error: unknown, result: unknown): void => {
    if (this.state !== "running") return // interrupted: the canceller owns the session now
    const session = this.session!
    if (error) {
      this.error = error instanceof CoreError ? error : new CoreError("Statement", "Failed to execute statement", error)
    } else if (session.transactionStatus !== "I") {
      // A lone BEGIN would otherwise be rolled back by the release right away, and the statements
      // meant to be inside it would autocommit one by one on whatever connection they get.
      this.error = new CoreError(
        "TransactionLeftOpen",
        "a statement outside a transaction left one open (BEGIN or START TRANSACTION): it was rolled back; " +
          "use sql.withTransaction, or sql.reserve for hand-written transaction control"
      )
    } else {
      try {
        this.value = this.onResult(result)
      } catch (cause) {
        this.error = new CoreError("Statement", "Failed to read result", cause)
      }
    }
    if (this.pool.releaseClean(session)) {
      this.state = "done"
      this.onDone(this.error, this.value)
      return
    }
    this.state = "releasing"
    this.cleanup = this.pool.releaseDirty(session).then(() => {
      this.state = "done"
      this.onDone(this.error, this.value)
    })
  }

  /**
   * The caller was interrupted: a waiter leaves the queue; a running statement is cancelled and its
   * session released through the protocol. The returned promise (if any) is that cleanup, always
   * within the outer deadline; `onDone` is not called afterwards.
   */
  interrupt(): Promise<void> | undefined {
    switch (this.state) {
      case "waiting":
        this.state = "done"
        this.pool.abandon(this.waiter!)
        return undefined
      case "running": {
        this.state = "releasing"
        const session = this.session!
        const record = this.record!
        this.cleanup = this.pool
          .bounded(session.interrupt(record), [session], undefined)
          .then(() => this.pool.releaseDirty(session))
        return this.cleanup
      }
      case "releasing":
        return this.cleanup
      case "done":
        return undefined
    }
  }
}
