/**
 * The demo's runs, without Effect: which scenarios it runs (as data, {@link ScenarioSpec}), what a
 * run measured ({@link RunStats}), the reporter that accumulates a body's reports into it, and the
 * line protocol by which a run in another process (the Effect 4 contenders, which need Node 22 and
 * effect 4) sends its numbers back. The Effect 3 bodies (./interruptions-effect3.ts) and the
 * Effect 4 ones (effect4/test/support/interruptions-effect4.ts) both report into these.
 *
 * @since 0.1.0
 */
import * as Interruptions from "./interruptions.js"

/**
 * How long one interruption took: from interrupting the fiber to the fiber ending. `done` is false
 * while the fiber has not ended yet (`ms` is then how long it has been waited for).
 *
 * @since 0.1.0
 * @category models
 */
export type Sample = Interruptions.Interruption

/**
 * What a run measured. Mutable: the live display reads it while the run goes on.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunStats {
  /** Operations that completed successfully (transactions, statements, probes). */
  ok: number
  /** Fibers that were interrupted while still running. */
  interrupted: number
  /** Interruptions not done within the deadline. */
  hung: number
  /** Fibers nobody interrupted that failed, or got no result within their deadline. */
  collateral: number
  /** Messages of the collateral failures, with how often each was seen. */
  readonly failures: Map<string, number>
  readonly latencies: Array<Sample>
  /** Most backends seen still running the interrupted statement after the interruptions. */
  running: number
  /** Most backends seen idle in transaction after the interruptions. */
  idleInTx: number
  /** Daemon close: transactions that committed after the Layer's close was asked for. */
  committedAfterClose: number
  readonly notes: Array<string>
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const makeStats = (): RunStats => ({
  ok: 0,
  interrupted: 0,
  hung: 0,
  collateral: 0,
  failures: new Map(),
  latencies: [],
  running: 0,
  idleInTx: 0,
  committedAfterClose: 0,
  notes: []
})

/**
 * The deadlines of a run, in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export type Deadlines = Interruptions.Deadlines

/**
 * The defaults: 2 s to end an interrupted fiber, 1.5 s for a probe, 300 ms to settle.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaultDeadlines: Deadlines = { interruptMs: 2_000, probeMs: 1_500, settleMs: 300 }

const recordFailure = (stats: RunStats, message: string) => {
  stats.collateral++
  stats.failures.set(message, (stats.failures.get(message) ?? 0) + 1)
}

/** A fiber nobody interrupted: a success counts as done, anything else as collateral. */
const account = (stats: RunStats, ending: Interruptions.Ending) => {
  if (ending._tag === "Success") stats.ok++
  else recordFailure(stats, ending.description)
}

/**
 * A reporter that accumulates what a scenario reports into `stats`, and never stops it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const reportTo = (stats: RunStats): Interruptions.Reporter => ({
  interrupting: (interruption) => {
    stats.latencies.push(interruption)
    stats.interrupted++
  },
  interrupted: (interruption) => {
    if (interruption.hung) stats.hung++
  },
  endedBefore: (ending) => account(stats, ending),
  after: (view) => {
    stats.running = Math.max(stats.running, view.running.length)
    stats.idleInTx = Math.max(stats.idleInTx, view.inTransaction.length)
  },
  probe: (report) =>
    report.ending === undefined
      ? recordFailure(stats, `${report.what}: no result within ${report.deadlineMs} ms`)
      : account(stats, report.ending),
  closed: (report) => {
    if (!report.done) {
      stats.notes.push(
        `closing the Layer had not returned ${Math.round(report.ms / 100) / 10} s later (daemon transactions open)`
      )
    }
  },
  committed: (report) => {
    stats.committedAfterClose += report.committed
  }
})

/**
 * A scenario as data, so that a run in another process can be told which one to run.
 *
 * @since 0.1.0
 * @category models
 */
export type ScenarioSpec =
  | { readonly kind: "repro"; readonly scenario: Interruptions.ReproScenario; readonly budgetMs: number }
  | { readonly kind: "storm"; readonly scenario: Interruptions.StormScenario }
  | { readonly kind: "saturation"; readonly scenario: Interruptions.SaturationScenario }
  | { readonly kind: "blackhole"; readonly scenario: Interruptions.BlackholeScenario }
  | { readonly kind: "daemonClose"; readonly scenario: Interruptions.DaemonCloseScenario }

/**
 * A scenario as the demo runs it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Scenario {
  readonly id: string
  readonly title: string
  readonly description: string
  /** Pool size for every contender. */
  readonly connections: number
  /** How long the run is expected to take on a well-behaved contender (for the progress bar). */
  readonly plannedMs: number
  /** The hard limit on the scenario's body; past it the run is abandoned and that is reported. */
  readonly limitMs: number
  readonly spec: ScenarioSpec
}

/** Whether a scenario's run needs a fault proxy between the client and the server. */
export const needsProxy = (spec: ScenarioSpec): boolean => spec.kind === "blackhole"

/**
 * A reporter for `spec` into `stats`: {@link reportTo}, and for saturation a note when the server
 * did not show every connection busy.
 *
 * @since 0.1.0
 * @category constructors
 */
export const reporterFor = (spec: ScenarioSpec, stats: RunStats): Interruptions.Reporter =>
  spec.kind === "saturation"
    ? {
        ...reportTo(stats),
        ready: (view) => {
          if (!Interruptions.allRunning(view)) {
            stats.notes.push(`the server showed ${view.running.length} of ${view.expected} ${view.fragment} running`)
          }
        }
      }
    : reportTo(stats)

/**
 * The demo's scenarios, scaled to a total duration (about `totalMs` for the first three, per
 * contender): the asyncpg report, the storm and saturation, then the two failures only
 * `@effect/sql-pg` 4 still has among the clients on Effect 4 (a network blackhole during an idle
 * transaction, and a Layer closed while daemon transactions run).
 *
 * @since 0.1.0
 * @category scenarios
 */
export const demoScenarios = (totalMs: number, deadlines: Deadlines = defaultDeadlines): Array<Scenario> => {
  const scale = Math.min(3, Math.max(0.15, totalMs / 60_000))
  const reproBudget = Math.round(10_000 * scale)
  const iterations = Math.max(1, Math.round(Interruptions.asyncpgRepro.iterations * scale))
  const reproRun: Interruptions.ReproScenario = { ...Interruptions.asyncpgRepro, iterations }
  const stormRun: Interruptions.StormScenario = {
    ...Interruptions.storm,
    durationMs: Math.max(1_000, Math.round(Interruptions.storm.durationMs * scale))
  }
  const busy = Interruptions.saturation
  const silent = Interruptions.blackhole
  const daemons = Interruptions.daemonClose
  const perIteration = reproRun.interruptAfterMs + deadlines.settleMs + 100
  const worstIteration = reproRun.interruptAfterMs + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs
  return [
    {
      id: reproRun.id,
      title: reproRun.title,
      description: `pool of ${reproRun.connections}: a transaction runs ${reproRun.transaction[0]}, then ${reproRun.interrupts}, interrupted after ${reproRun.interruptAfterMs / 1000} s; then a statement nobody interrupts (${iterations}×)`,
      connections: reproRun.connections,
      plannedMs: iterations * perIteration,
      limitMs: reproBudget + worstIteration + 5_000,
      spec: { kind: "repro", scenario: reproRun, budgetMs: reproBudget }
    },
    {
      id: stormRun.id,
      title: stormRun.title,
      description: `pool of ${stormRun.connections}, ${stormRun.workers} fibers running short transactions and statements for ${(stormRun.durationMs / 1000).toFixed(0)} s, ${Math.round(stormRun.victimRate * 100)} % interrupted at random moments`,
      connections: stormRun.connections,
      plannedMs: stormRun.durationMs + deadlines.settleMs + 200,
      limitMs: stormRun.durationMs + deadlines.interruptMs + deadlines.probeMs * 2 + deadlines.settleMs + 5_000,
      spec: { kind: "storm", scenario: stormRun }
    },
    {
      id: busy.id,
      title: busy.title,
      description: `pool of ${busy.connections} busy with ${busy.interrupts}, ${busy.waiters} more fibers waiting; all ${busy.connections + busy.waiters} interrupted at once`,
      connections: busy.connections,
      plannedMs: 800 + deadlines.settleMs,
      limitMs:
        busy.busyWithinMs + busy.queueMs + deadlines.interruptMs + deadlines.settleMs + deadlines.probeMs + 5_000,
      spec: { kind: "saturation", scenario: busy }
    },
    {
      id: silent.id,
      title: silent.title,
      description: `pool of ${silent.connections}: a transaction is open and idle when the network goes silent (a proxy drops every byte); the fiber is interrupted (${silent.interruptMs / 1000} s allowed), then traffic flows again`,
      connections: silent.connections,
      plannedMs: 2_000,
      limitMs: 5_000 + silent.interruptMs + silent.recoverMs + deadlines.probeMs + 5_000,
      spec: { kind: "blackhole", scenario: silent }
    },
    {
      id: daemons.id,
      title: daemons.title,
      description: `pool of ${daemons.connections}: ${daemons.daemons} daemon fibers inside transactions when the Layer is closed; they go on once the close returned (or after ${daemons.closeWithinMs / 1000} s): does anything commit?`,
      connections: daemons.connections,
      plannedMs: 500,
      limitMs: 5_000 + daemons.closeWithinMs + daemons.endWithinMs + 5_000,
      spec: { kind: "daemonClose", scenario: daemons }
    }
  ]
}

/**
 * What a run in another process prints, one JSON object per line: snapshots of its stats while it
 * runs, then its end (how long closing its Layer took; `null` when it had not within the deadline).
 *
 * @since 0.1.0
 * @category models
 */
export type RemoteLine =
  | { readonly _tag: "Stats"; readonly stats: EncodedStats }
  | { readonly _tag: "Done"; readonly stats: EncodedStats; readonly closeMs: number | null }

/**
 * {@link RunStats} as JSON.
 *
 * @since 0.1.0
 * @category models
 */
export interface EncodedStats extends Omit<RunStats, "failures"> {
  readonly failures: ReadonlyArray<readonly [string, number]>
}

/**
 * @since 0.1.0
 * @category utils
 */
export const encodeStats = (stats: RunStats): EncodedStats => ({ ...stats, failures: [...stats.failures] })

/**
 * Copies a remote snapshot into `stats` (the object the live display reads).
 *
 * @since 0.1.0
 * @category utils
 */
export const applyStats = (stats: RunStats, encoded: EncodedStats): void => {
  stats.ok = encoded.ok
  stats.interrupted = encoded.interrupted
  stats.hung = encoded.hung
  stats.collateral = encoded.collateral
  stats.running = encoded.running
  stats.idleInTx = encoded.idleInTx
  stats.committedAfterClose = encoded.committedAfterClose
  stats.failures.clear()
  for (const [message, count] of encoded.failures) stats.failures.set(message, count)
  stats.latencies.splice(0, stats.latencies.length, ...encoded.latencies)
  stats.notes.splice(0, stats.notes.length, ...encoded.notes)
}

/**
 * What the parent tells a run in another process.
 *
 * @since 0.1.0
 * @category models
 */
export interface RemoteJob {
  readonly contender: string
  readonly url: string
  readonly app: string
  readonly connections: number
  readonly limitMs: number
  readonly deadlines: Deadlines
  readonly spec: ScenarioSpec
  /** How long closing the Layer may take before it is reported as hung. */
  readonly closeDeadlineMs: number
}
