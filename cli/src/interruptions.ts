/**
 * The interruption scenarios, defined once: the demo (`pg-warden demo`), `pg-warden check` and the
 * conformance suite (test/conformance/cases.ts) run these same definitions. Each scenario is data
 * (pool size, statements, iterations, when to interrupt); its body, written once per Effect edition
 * (./interruptions-effect3.ts for Effect 3), runs it against a `SqlClient` and tells a
 * {@link Reporter} what happened: each interruption (how long the fiber took to end, how it ended),
 * each statement nobody interrupted, and the server's view, read with pg-warden's `Observer`. The
 * demo accumulates the reports into its table; a conformance case judges them against its own
 * limits and stops the scenario at the first one broken (a hook throws {@link ScenarioStop}).
 *
 * This module is Effect-free (no `effect` import), so that every edition shares the data, the
 * reports and the server-side views.
 *
 * @since 0.1.0
 */
import { type Backend, inTransaction, type Observer, runs } from "pg-warden/Observer"

/**
 * The SQLAlchemy/asyncpg report, ported: on a pool of 1, a transaction runs `select 1`, then
 * `pg_sleep(10)`, and is interrupted 1 s after it started; then a statement nobody interrupts must
 * work. Repeated `iterations` times.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReproScenario {
  readonly id: string
  readonly title: string
  readonly connections: number
  /** The transaction's two statements: the first completes, the second is still running when interrupted. */
  readonly transaction: readonly [first: string, second: string]
  /** How the server shows the statement that is interrupted (a fragment of its text). */
  readonly interrupts: string
  /** The transaction is interrupted this long after it was started. */
  readonly interruptAfterMs: number
  readonly iterations: number
  /** The statement nobody interrupts, after each interruption. */
  readonly probe: string
}

/**
 * @since 0.1.0
 * @category scenarios
 */
export const asyncpgRepro: ReproScenario = {
  id: "repro",
  title: "asyncpg repro",
  connections: 1,
  transaction: ["select 1", "select pg_sleep(10)"],
  interrupts: "pg_sleep(10)",
  interruptAfterMs: 1_000,
  iterations: 5,
  probe: "select 1"
}

/**
 * A saturated pool: every connection runs a long statement, as many fibers again wait for a
 * connection, and all of them are interrupted at once; then a statement nobody interrupts must work.
 *
 * @since 0.1.0
 * @category models
 */
export interface SaturationScenario {
  readonly id: string
  readonly title: string
  /** The pool size; one long statement per connection. */
  readonly connections: number
  readonly long: string
  /** How the server shows the long statement (a fragment of its text). */
  readonly interrupts: string
  /** The waiters start once the server shows every connection running the long statement, or after this long. */
  readonly busyWithinMs: number
  readonly waiters: number
  readonly waiter: string
  /** The waiters are given this long to queue for a connection (the server cannot show that), then all are interrupted. */
  readonly queueMs: number
  readonly probe: string
}

/**
 * @since 0.1.0
 * @category scenarios
 */
export const saturation: SaturationScenario = {
  id: "saturation",
  title: "saturation",
  connections: 4,
  long: "select pg_sleep(30)",
  interrupts: "pg_sleep(30)",
  busyWithinMs: 5_000,
  waiters: 4,
  waiter: "select 1",
  queueMs: 200,
  probe: "select 1"
}

/**
 * A random interruption storm: `workers` fibers run, for `durationMs`, short transactions and single
 * statements, half and half; a share `victimRate` of them is interrupted 0..`maxDelayMs` after it
 * started (waiting for a connection, mid-statement, between statements, in COMMIT). Everything else
 * must succeed. Ends with a statement nobody interrupts.
 *
 * @since 0.1.0
 * @category models
 */
export interface StormScenario {
  readonly id: string
  readonly title: string
  readonly connections: number
  readonly workers: number
  readonly durationMs: number
  /** The share of transactions and statements that are interrupted (0–1). */
  readonly victimRate: number
  readonly maxDelayMs: number
  readonly transaction: ReadonlyArray<string>
  readonly statement: string
  /** How the server shows the statements that are interrupted (a fragment of their text). */
  readonly interrupts: string
  readonly probe: string
}

/**
 * @since 0.1.0
 * @category scenarios
 */
export const storm: StormScenario = {
  id: "storm",
  title: "interruption storm",
  connections: 4,
  workers: 16,
  durationMs: 8_000,
  victimRate: 0.3,
  maxDelayMs: 30,
  transaction: ["select 1", "select pg_sleep(0.01)", "select 1"],
  statement: "select pg_sleep(0.01)",
  interrupts: "pg_sleep",
  probe: "select 1"
}

/**
 * The network to the server goes silent (a blackhole: nothing passes, no socket closes) while a
 * transaction is open and idle, and the fiber holding it is interrupted; then traffic flows again.
 * Reported: the interruption (bounded by `interruptMs`, not the driver's usual deadline, since a
 * silent network costs the cleanup its deadlines), whether the server still holds the transaction
 * `recoverMs` after traffic returned (`after`), and a statement nobody interrupts. Needs
 * {@link Run.network}.
 *
 * @since 0.1.0
 * @category models
 */
export interface BlackholeScenario {
  readonly id: string
  readonly title: string
  readonly connections: number
  /** The transaction's statement; then the transaction stays open and idle. */
  readonly transaction: string
  /** How the server shows the transaction's statement (a fragment of its text). */
  readonly interrupts: string
  /** How long the interrupted fiber may take to end under the blackhole before it is reported hung. */
  readonly interruptMs: number
  /** How long after traffic returned the server may take to end the transaction. */
  readonly recoverMs: number
  readonly probe: string
}

/**
 * @since 0.1.0
 * @category scenarios
 */
export const blackhole: BlackholeScenario = {
  id: "blackhole",
  title: "network blackhole",
  connections: 1,
  transaction: "select txid_current()",
  interrupts: "txid_current",
  interruptMs: 6_000,
  recoverMs: 3_000,
  probe: "select 1"
}

/**
 * The Layer is closed while daemon fibers (started outside its scope) are inside transactions,
 * each waiting on a gate; the gate opens once the close has returned (or after `closeWithinMs`).
 * Reported: how long the close took ({@link Reporter.closed}) and how many of the daemons'
 * transactions committed after the close was asked for (`txid_status`, {@link Reporter.committed}).
 * Needs {@link Run.closeLayer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface DaemonCloseScenario {
  readonly id: string
  readonly title: string
  readonly connections: number
  readonly daemons: number
  /** The close is waited for this long; past it the gate opens anyway and the close is reported hung. */
  readonly closeWithinMs: number
  /** How long the daemons may take to end once the gate is open. */
  readonly endWithinMs: number
}

/**
 * @since 0.1.0
 * @category scenarios
 */
export const daemonClose: DaemonCloseScenario = {
  id: "daemon-close",
  title: "Layer closed, daemon tx",
  connections: 2,
  daemons: 2,
  closeWithinMs: 5_000,
  endWithinMs: 5_000
}

/**
 * The limits a driver runs a scenario with, in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Deadlines {
  /** How long the body waits for an interrupted fiber to end; past it the interruption is reported hung. */
  readonly interruptMs: number
  /** How long a statement nobody interrupts may take; past it, it is reported without a result. */
  readonly probeMs: number
  /** How long after the interruptions the server's view is read. */
  readonly settleMs: number
  /**
   * Saturation only: when set, the body also watches the server while it interrupts, and reports
   * whether the long statements stopped within this long ({@link Reporter.stopped}).
   */
  readonly stoppedWithinMs?: number
}

/**
 * How a fiber ended, without the runtime's types.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ending {
  readonly _tag: "Success" | "Interrupted" | "Failure"
  /** `success`, `interrupted`, or what the failure says. */
  readonly description: string
}

/**
 * One interruption, updated in place: from interrupting the fiber to the fiber ending. While the
 * fiber has not ended, `done` is false and `ms` is how long it has been waited for; if it ends after
 * the deadline, `ms`, `done` and `ending` are still updated then.
 *
 * @since 0.1.0
 * @category models
 */
export interface Interruption {
  ms: number
  done: boolean
  /** Not ended within the deadline (even if it ended later). */
  hung: boolean
  ending: Ending | undefined
}

/**
 * A statement nobody interrupts: how it ended, or `undefined` when it had no result within `deadlineMs`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProbeReport {
  /** What the statement was, for messages: `the next statement`, `a transaction`. */
  readonly what: string
  readonly deadlineMs: number
  readonly ending: Ending | undefined
}

/**
 * The server's view of the run's backends, and those of them running the statement to interrupt
 * (`fragment`) and sitting in an open transaction.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServerView {
  readonly fragment: string
  readonly backends: ReadonlyArray<Backend>
  readonly running: ReadonlyArray<Backend>
  readonly inTransaction: ReadonlyArray<Backend>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const serverView = (fragment: string, backends: ReadonlyArray<Backend>): ServerView => ({
  fragment,
  backends,
  running: backends.filter(runs(fragment)),
  inTransaction: backends.filter(inTransaction)
})

/**
 * The server's view when the interruption is due.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadyView extends ServerView {
  /** How many backends should be running the statement to interrupt. */
  readonly expected: number
  /** The repro: how long the transaction's first statement took (`undefined`: it had not completed). */
  readonly firstStatementMs?: number | undefined
}

/**
 * Whether the server showed the statement to interrupt running on as many backends as expected.
 *
 * @since 0.1.0
 * @category utils
 */
export const allRunning = (view: ReadyView): boolean => view.running.length >= view.expected

/**
 * Saturation, with {@link Deadlines.stoppedWithinMs}: whether the server stopped running the long
 * statements within that long of the interruptions, and what it showed last.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoppedView extends ServerView {
  readonly ok: boolean
  readonly ms: number
}

/**
 * What a scenario's body reports, as it happens. A hook that throws (a {@link ScenarioStop}, say)
 * ends the scenario there with that message; the fibers the body still waits for are then
 * interrupted in the background.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reporter {
  /** The repro: iteration `i` (from 1) begins. */
  readonly iteration?: (i: number) => void
  /**
   * The interruption is due: what the server shows now (saturation: once every connection is busy,
   * or after `busyWithinMs`). The repro reads the server for this only when the hook is given.
   */
  readonly ready?: (view: ReadyView) => void
  /** A fiber is being interrupted now (the record is then updated in place). */
  readonly interrupting?: (interruption: Interruption) => void
  /** The wait for an interrupted fiber is over: it ended, or the deadline passed (`hung`). */
  readonly interrupted: (interruption: Interruption) => void
  /** A fiber due to be interrupted had ended before (it was not interrupted). */
  readonly endedBefore: (ending: Ending) => void
  /** Saturation, with {@link Deadlines.stoppedWithinMs}: the server's view while interrupting. */
  readonly stopped?: (view: StoppedView) => void
  /** The server's view `settleMs` after the interruptions. */
  readonly after: (view: ServerView) => void
  /** A statement nobody interrupted: the one after the interruptions, or (storm) every transaction not picked. */
  readonly probe: (report: ProbeReport) => void
  /** Daemon close: how long closing the Layer took (`done` false: not within `closeWithinMs`). */
  readonly closed?: (report: { readonly ms: number; readonly done: boolean }) => void
  /** Daemon close: how many of the daemons' transactions committed after the close was asked for. */
  readonly committed?: (report: { readonly committed: number; readonly of: number }) => void
}

/**
 * The network between a scenario's client and the server, when the driver put a fault proxy there.
 *
 * @since 0.1.0
 * @category models
 */
export interface Network {
  readonly blackhole: () => void
  readonly pass: () => void
  /** Cuts every connection through the proxy (so a client stuck on a silent socket can close). */
  readonly reset: () => void
}

/**
 * What a hook throws to end the scenario, with what broke.
 *
 * @since 0.1.0
 * @category errors
 */
export class ScenarioStop extends Error {
  override readonly name = "ScenarioStop"
}

/**
 * The server reads a body needs: pg-warden's `Observer` (the tests' `Admin` is one) or anything
 * with the same two methods.
 *
 * @since 0.1.0
 * @category models
 */
export type ServerReads = Pick<Observer, "backends" | "waitForBackends" | "query">

/**
 * Whether the transactions `xids` committed, as the server records it (`txid_status`): how many did.
 *
 * @since 0.1.0
 * @category utils
 */
export const committedCount = async (server: ServerReads, xids: ReadonlyArray<string>): Promise<number> => {
  if (xids.length === 0) return 0
  const rows = await server.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM unnest($1::bigint[]) AS x WHERE txid_status(x) = 'committed'",
    [xids]
  )
  return rows[0]?.n ?? 0
}
