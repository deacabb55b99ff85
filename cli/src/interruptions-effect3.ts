/**
 * The bodies of the interruption scenarios (./interruptions.ts) on Effect 3, written once for the
 * demo, `pg-warden check` and the conformance suite. Each body only uses the `SqlClient` API, so
 * every contender runs exactly the same code; it reads the server through pg-warden's `Observer`
 * and tells its {@link Reporter} what happened, and judges nothing itself.
 *
 * Every wait is bounded. Work that may hang is forked as a daemon fiber, so that a contender whose
 * interruption never completes cannot hold the driver: the hang is reported, and the fiber is left
 * to end whenever it does. When a hook stops the scenario, the fibers it still waits for are
 * interrupted in the background.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { inTransaction, runs } from "pg-warden/Observer"
import * as WardenError from "pg-warden/WardenError"
import {
  asyncpgRepro,
  type BlackholeScenario,
  blackhole as blackholeScenario,
  committedCount,
  type DaemonCloseScenario,
  type Deadlines,
  daemonClose as daemonCloseScenario,
  type Ending,
  type Interruption,
  type Network,
  type ProbeReport,
  type Reporter,
  type ReproScenario,
  type SaturationScenario,
  type ServerReads,
  type StormScenario,
  saturation as saturationScenario,
  serverView,
  storm as stormScenario
} from "./interruptions.js"

/**
 * A scenario ended early: a hook stopped it (the message is what it threw), or the server could not
 * be read.
 *
 * @since 0.1.0
 * @category errors
 */
export class ScenarioFailure extends Data.TaggedError("ScenarioFailure")<{ readonly message: string }> {}

/**
 * What a body runs with.
 *
 * @since 0.1.0
 * @category models
 */
export interface Run {
  readonly sql: SqlClient.SqlClient
  /** The server's view, from a session that is not a connection of the pool under test. */
  readonly server: ServerReads
  /** The `application_name` of the contender's connections. */
  readonly app: string
  readonly deadlines: Deadlines
  readonly reporter: Reporter
  /** The network to the server, when the driver put a fault proxy there (the blackhole needs it). */
  readonly network?: Network | undefined
  /** Closes the client's Layer (the daemon close needs it); the driver's own close afterwards is then a no-op. */
  readonly closeLayer?: (() => Promise<void>) | undefined
}

const now = () => performance.now()

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Calls a hook; what it throws stops the scenario. */
const tell = (hook: () => void): Effect.Effect<void, ScenarioFailure> =>
  Effect.try({ try: hook, catch: (error) => new ScenarioFailure({ message: messageOf(error) }) })

const read = <A>(f: () => Promise<A>): Effect.Effect<A, ScenarioFailure> =>
  Effect.tryPromise({ try: f, catch: (error) => new ScenarioFailure({ message: messageOf(error) }) })

const describeError = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const e = error as { message?: unknown; cause?: unknown; _tag?: unknown }
  const message = typeof e.message === "string" && e.message !== "" ? e.message : String(e._tag ?? "error")
  const inner = (e.cause as { message?: unknown } | undefined)?.message
  const code = WardenError.sqlState(error)
  let out = message
  if (typeof inner === "string" && inner !== "" && !out.includes(inner)) out += `: ${inner}`
  if (code !== undefined && !out.includes(code)) out += ` (SQLSTATE ${code})`
  return out
}

/**
 * One line for how a fiber ended.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeExit = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return describeError(failure.value)
  const defect = Cause.dieOption(exit.cause)
  if (Option.isSome(defect)) return `defect: ${describeError(defect.value)}`
  return Cause.isInterruptedOnly(exit.cause) ? "interrupted" : (Cause.pretty(exit.cause).split("\n")[0] ?? "failed")
}

/**
 * An exit as an {@link Ending}.
 *
 * @since 0.1.0
 * @category utils
 */
export const endingOf = <A, E>(exit: Exit.Exit<A, E>): Ending => ({
  _tag: Exit.isSuccess(exit)
    ? "Success"
    : Cause.isInterruptedOnly(exit.cause) && !Cause.isEmpty(exit.cause)
      ? "Interrupted"
      : "Failure",
  description: describeExit(exit)
})

/**
 * Interrupts `fiber` and waits at most `deadlineMs` for it to end. `onStart` sees the record before
 * the interruption; the record keeps being updated in the background if the fiber ends later, so a
 * hang is known with its real length when it ends.
 *
 * @since 0.1.0
 * @category utils
 */
export const interruptTimed = <A, E, E2 = never>(
  fiber: Fiber.Fiber<A, E>,
  deadlineMs: number,
  onStart: (interruption: Interruption) => Effect.Effect<void, E2> = () => Effect.void
): Effect.Effect<Interruption, E2> =>
  Effect.gen(function* () {
    const started = now()
    const record: Interruption = { ms: 0, done: false, hung: false, ending: undefined }
    const ended = (exit: Exit.Exit<A, E>) => {
      if (record.done) return
      record.ms = now() - started
      record.done = true
      record.ending = endingOf(exit)
    }
    yield* onStart(record)
    yield* Fiber.interruptFork(fiber)
    yield* Effect.forkDaemon(Effect.map(Fiber.await(fiber), ended))
    const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(deadlineMs))
    if (Option.isSome(exit)) ended(exit.value)
    else {
      record.hung = true
      if (!record.done) record.ms = now() - started
    }
    return record
  })

/**
 * Runs `effect` on a daemon fiber that nobody interrupts and waits at most `deadlineMs` for it;
 * without a result by then the fiber is interrupted in the background.
 *
 * @since 0.1.0
 * @category utils
 */
export const probeTimed = <A, E>(
  effect: Effect.Effect<A, E>,
  deadlineMs: number,
  what: string
): Effect.Effect<ProbeReport> =>
  Effect.gen(function* () {
    const fiber = yield* Effect.forkDaemon(effect)
    const exit = yield* Fiber.await(fiber).pipe(
      Effect.timeoutOption(deadlineMs),
      Effect.onInterrupt(() => Fiber.interruptFork(fiber))
    )
    if (Option.isSome(exit)) return { what, deadlineMs, ending: endingOf(exit.value) }
    yield* Fiber.interruptFork(fiber)
    return { what, deadlineMs, ending: undefined }
  })

/**
 * {@link interruptTimed}, reported to `reporter` (`interrupting`, then `interrupted`).
 *
 * @since 0.1.0
 * @category utils
 */
export const interruptReported = <A, E>(
  fiber: Fiber.Fiber<A, E>,
  reporter: Reporter,
  deadlineMs: number
): Effect.Effect<Interruption, ScenarioFailure> =>
  interruptTimed(fiber, deadlineMs, (interruption) => tell(() => reporter.interrupting?.(interruption))).pipe(
    Effect.tap((interruption) => tell(() => reporter.interrupted(interruption)))
  )

/**
 * {@link probeTimed}, reported to `reporter`.
 *
 * @since 0.1.0
 * @category utils
 */
export const probeReported = <A, E>(
  effect: Effect.Effect<A, E>,
  reporter: Reporter,
  deadlineMs: number,
  what: string
): Effect.Effect<void, ScenarioFailure> =>
  Effect.flatMap(probeTimed(effect, deadlineMs, what), (report) => tell(() => reporter.probe(report)))

/** Interrupts `fiber`, unless `early` (its poll) says it had already ended: then that is reported instead. */
const interruptUnlessEnded = <A, E>(
  run: Run,
  fiber: Fiber.Fiber<A, E>,
  early: Option.Option<Exit.Exit<A, E>>
): Effect.Effect<void, ScenarioFailure> =>
  Option.isSome(early)
    ? tell(() => run.reporter.endedBefore(endingOf(early.value)))
    : Effect.asVoid(interruptReported(fiber, run.reporter, run.deadlines.interruptMs))

/** After the interruptions: the server's view `settleMs` later, then a statement nobody interrupts. */
const aftermath = (
  run: Run,
  scenario: { readonly interrupts: string; readonly probe: string }
): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    yield* Effect.sleep(run.deadlines.settleMs)
    const backends = yield* read(() => run.server.backends(run.app))
    yield* tell(() => run.reporter.after(serverView(scenario.interrupts, backends)))
    yield* probeReported(run.sql.unsafe(scenario.probe), run.reporter, run.deadlines.probeMs, "the next statement")
  })

const interruptInBackground = (fibers: ReadonlyArray<Fiber.Fiber<unknown, unknown>>) =>
  Effect.forEach(fibers, (fiber) => Fiber.interruptFork(fiber), { discard: true })

/**
 * {@link asyncpgRepro}: per iteration, the transaction is forked, interrupted `interruptAfterMs`
 * after it started (unless it had ended), the server's view is read, and a statement nobody
 * interrupts follows. With `budgetMs`, no new iteration starts once that much time has passed.
 * Only when the reporter has a `ready` hook is the server read at the moment of the interruption.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const repro = (
  run: Run,
  scenario: ReproScenario = asyncpgRepro,
  budgetMs = Number.POSITIVE_INFINITY
): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    const { sql, reporter } = run
    const [first, second] = scenario.transaction
    const started = now()
    for (let i = 1; i <= scenario.iterations && (i === 1 || now() - started < budgetMs); i++) {
      yield* tell(() => reporter.iteration?.(i))
      const forkedAt = now()
      let firstStatementMs: number | undefined
      const fiber = yield* Effect.forkDaemon(
        sql.withTransaction(
          sql.unsafe(first).pipe(
            Effect.tap(() => Effect.sync(() => (firstStatementMs = now() - forkedAt))),
            Effect.zipRight(sql.unsafe(second))
          )
        )
      )
      yield* Effect.gen(function* () {
        yield* Effect.sleep(scenario.interruptAfterMs)
        const ready = reporter.ready
        if (ready !== undefined) {
          const backends = yield* read(() => run.server.backends(run.app))
          yield* tell(() => ready({ ...serverView(scenario.interrupts, backends), expected: 1, firstStatementMs }))
        }
        yield* interruptUnlessEnded(run, fiber, yield* Fiber.poll(fiber))
      }).pipe(Effect.onError(() => Fiber.interruptFork(fiber)))
      yield* aftermath(run, scenario)
    }
  })

const randomInt = (maxInclusive: number) => Math.floor(Math.random() * (maxInclusive + 1))

/**
 * {@link stormScenario}: the workers run until `durationMs` has passed; a victim is interrupted
 * (unless it had ended), every other transaction or statement is reported as a probe with
 * `interruptMs + probeMs` to complete. Then the server's view and a statement nobody interrupts.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const storm = (run: Run, scenario: StormScenario = stormScenario): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    const { sql, reporter, deadlines } = run
    const end = now() + scenario.durationMs
    const transaction = sql.withTransaction(
      Effect.forEach(scenario.transaction, (statement) => sql.unsafe(statement), { discard: true })
    )
    const statement = sql.unsafe(scenario.statement)
    const worker = Effect.gen(function* () {
      while (now() < end) {
        const victim = Math.random() < scenario.victimRate
        const work = Math.random() < 0.5 ? transaction : statement
        if (victim) {
          const fiber = yield* Effect.forkDaemon(work)
          yield* Effect.sleep(randomInt(scenario.maxDelayMs)).pipe(
            Effect.zipRight(Fiber.poll(fiber)),
            Effect.flatMap((early) => interruptUnlessEnded(run, fiber, early)),
            Effect.onError(() => Fiber.interruptFork(fiber))
          )
        } else {
          yield* probeReported(work, reporter, deadlines.interruptMs + deadlines.probeMs, "a transaction")
        }
      }
    })
    yield* Effect.all(
      Array.from({ length: scenario.workers }, () => worker),
      { concurrency: "unbounded", discard: true }
    )
    yield* aftermath(run, scenario)
  })

/**
 * {@link saturationScenario}: the long statements are forked and the server watched until every
 * connection runs one (`ready`); then the waiters are forked, given `queueMs` to queue, and all
 * fibers are interrupted at once (those that had ended are reported as such). With
 * `deadlines.stoppedWithinMs`, the server is watched meanwhile (`stopped`). Then the server's view
 * and a statement nobody interrupts.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const saturation = (
  run: Run,
  scenario: SaturationScenario = saturationScenario
): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    const { sql, reporter, deadlines } = run
    const n = scenario.connections
    const fibers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
    yield* Effect.gen(function* () {
      const fork = (statement: string) =>
        Effect.tap(Effect.forkDaemon(sql.unsafe(statement)), (fiber) => Effect.sync(() => fibers.push(fiber)))
      yield* Effect.forEach(Array.from({ length: n }), () => fork(scenario.long), { discard: true })
      const busy = yield* read(() =>
        run.server.waitForBackends(
          run.app,
          (bs) => bs.filter(runs(scenario.interrupts)).length >= n,
          scenario.busyWithinMs
        )
      )
      yield* tell(() => reporter.ready?.({ ...serverView(scenario.interrupts, busy.backends), expected: n }))
      yield* Effect.forEach(Array.from({ length: scenario.waiters }), () => fork(scenario.waiter), { discard: true })
      yield* Effect.sleep(scenario.queueMs)
      const early = yield* Effect.forEach(fibers, (fiber) => Fiber.poll(fiber))
      const within = deadlines.stoppedWithinMs
      const watch =
        within === undefined
          ? Effect.void
          : Effect.gen(function* () {
              const started = now()
              const last = yield* read(() =>
                run.server.waitForBackends(run.app, (bs) => !bs.some(runs(scenario.interrupts)), within)
              )
              const view = { ...serverView(scenario.interrupts, last.backends), ok: last.ok, ms: now() - started }
              yield* tell(() => reporter.stopped?.(view))
            })
      const interruptions = Effect.forEach(fibers, (fiber, i) => interruptUnlessEnded(run, fiber, early[i]!), {
        concurrency: "unbounded",
        discard: true
      })
      yield* Effect.all([watch, interruptions], { concurrency: "unbounded", discard: true })
    }).pipe(Effect.onError(() => interruptInBackground(fibers)))
    yield* aftermath(run, scenario)
  })

const stop = (message: string) => Effect.fail(new ScenarioFailure({ message }))

/**
 * {@link blackholeScenario}: a transaction is opened and left idle, the network goes silent, the
 * fiber is interrupted (reported, with the scenario's own deadline); then traffic flows again and the
 * server's view is read once it no longer shows the transaction, or after `recoverMs`; then a
 * statement nobody interrupts.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const blackhole = (
  run: Run,
  scenario: BlackholeScenario = blackholeScenario
): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    const network = run.network
    if (network === undefined) return yield* stop("the blackhole needs a fault proxy between the client and the server")
    const { sql, reporter } = run
    const opened = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkDaemon(
      sql.withTransaction(
        sql
          .unsafe(scenario.transaction)
          .pipe(Effect.zipRight(Deferred.succeed(opened, undefined)), Effect.zipRight(Effect.never))
      )
    )
    yield* Effect.gen(function* () {
      if (Option.isNone(yield* Effect.timeoutOption(Deferred.await(opened), 5_000))) {
        return yield* stop("the transaction did not start within 5 s")
      }
      yield* read(() => run.server.waitForBackends(run.app, (bs) => bs.some(inTransaction), 5_000))
      network.blackhole()
      yield* interruptReported(fiber, reporter, scenario.interruptMs).pipe(Effect.ensuring(Effect.sync(network.pass)))
    }).pipe(Effect.onError(() => Effect.sync(network.pass).pipe(Effect.zipRight(Fiber.interruptFork(fiber)))))
    const last = yield* read(() =>
      run.server.waitForBackends(run.app, (bs) => !bs.some(inTransaction), scenario.recoverMs)
    )
    yield* tell(() => reporter.after(serverView(scenario.interrupts, last.backends)))
    yield* probeReported(sql.unsafe(scenario.probe), reporter, run.deadlines.probeMs, "the next statement")
  })

/**
 * {@link daemonCloseScenario}: daemon fibers open transactions and wait on a gate; the Layer is
 * closed (reported with how long it took); the gate opens; the daemons get `endWithinMs` to end; the
 * server says how many of their transactions committed.
 *
 * @since 0.1.0
 * @category scenarios
 */
export const daemonClose = (
  run: Run,
  scenario: DaemonCloseScenario = daemonCloseScenario
): Effect.Effect<void, ScenarioFailure> =>
  Effect.gen(function* () {
    const closeLayer = run.closeLayer
    if (closeLayer === undefined) return yield* stop("the daemon close needs to close the Layer")
    const { sql, reporter } = run
    const gate = yield* Deferred.make<void>()
    const xids: Array<string> = []
    const inside = yield* Effect.forEach(Array.from({ length: scenario.daemons }), () => Deferred.make<void>())
    const daemons = yield* Effect.forEach(inside, (entered) =>
      Effect.forkDaemon(
        sql.withTransaction(
          sql.unsafe<{ xid: string }>("SELECT txid_current()::text AS xid").pipe(
            Effect.tap((rows) => Effect.sync(() => rows[0] !== undefined && xids.push(rows[0].xid))),
            Effect.zipRight(Deferred.succeed(entered, undefined)),
            Effect.zipRight(Deferred.await(gate)),
            Effect.zipRight(sql.unsafe("select 1"))
          )
        )
      )
    )
    yield* Effect.gen(function* () {
      const entered = yield* Effect.timeoutOption(Effect.forEach(inside, Deferred.await), 5_000)
      if (Option.isNone(entered)) return yield* stop("the daemons' transactions did not start within 5 s")
      const started = now()
      const closing = Effect.promise(closeLayer)
      const closed = yield* Effect.timeoutOption(closing, scenario.closeWithinMs)
      yield* tell(() => reporter.closed?.({ ms: now() - started, done: Option.isSome(closed) }))
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.timeoutOption(
        Effect.forEach(daemons, (daemon) => Fiber.await(daemon), { discard: true }),
        scenario.endWithinMs
      )
      const committed = yield* read(() => committedCount(run.server, xids))
      yield* tell(() => reporter.committed?.({ committed, of: scenario.daemons }))
    }).pipe(Effect.ensuring(Deferred.succeed(gate, undefined).pipe(Effect.zipRight(interruptInBackground(daemons)))))
  })
