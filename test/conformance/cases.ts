/**
 * The conformance suite, written once as data and run against two contenders:
 * `test/conformance.warden.test.ts` (pg-warden, every case must pass) and
 * `test/conformance.sqlpg.test.ts` (`@effect/sql-pg` 0.53, the baseline, with its observed failures).
 *
 * Rules for cases:
 * - only the `SqlClient` API (so both contenders run them);
 * - every layer is built in its own scope (`withContender`), and once that scope has closed the case asserts,
 *   from the server's side, that no backend with the case's `application_name` is left;
 * - the truth is the server's view (`pg_stat_activity` and table contents read by the admin connection),
 *   never only the client's bookkeeping;
 * - timing assertions are generous (2 shared cores) and waits are on conditions, not sleeps.
 *
 * `runCase` wraps a case with its fixtures (an admin connection, a unique `application_name`, a private schema)
 * and a hard time limit, so a contender that hangs fails instead of hanging CI.
 */
import { randomBytes } from "node:crypto"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import type * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Interruptions from "../../cli/src/interruptions.js"
import { allRunning, type Deadlines, type Reporter } from "../../cli/src/interruptions.js"
import * as Bodies from "../../cli/src/interruptions-effect3.js"
import { Admin, type Backend, uniqueAppName } from "../support/admin.js"
import { interruptionLimits, need, STRICT } from "./judging.js"

// ---------------------------------------------------------------------------------------------------------------
// Model

export interface LayerOptions {
  readonly maxConnections: number
  /** How long a statement may wait for a pool slot. A contender without such an option may ignore it. */
  readonly acquireTimeoutMs?: number
}

/** What a contender provides. Cases only use `SqlClient`. */
export type ContenderLayer = Layer.Layer<SqlClient.SqlClient | PgClient.PgClient, unknown>

export interface CaseContext {
  readonly url: string
  readonly admin: Admin
  /** The `application_name` of every connection the contender opens in this case (unique per case and run). */
  readonly app: string
  /** A schema created for this case (and dropped after it): put tables and functions here. */
  readonly schema: string
  /** A fresh layer of the contender, connecting as `app`. */
  readonly layer: (options: LayerOptions) => ContenderLayer
}

export interface Case {
  readonly id: string
  /** "C1".."C7", several separated by "/". */
  readonly contract: string
  readonly title: string
  readonly run: (ctx: CaseContext) => Effect.Effect<void, unknown, never>
}

export interface Contender {
  /** Short, used in application names. */
  readonly name: string
  readonly layer: (url: string, app: string, options: LayerOptions) => ContenderLayer
}

/** A conformance assertion that did not hold (the message says what the server or the client showed). */
export class CaseFailure extends Data.TaggedError("CaseFailure")<{ readonly message: string }> {}

/** Hard limit for one case, including its fixtures. */
export const CASE_TIME_LIMIT_MS = 25_000

/** How long, after a layer's scope closed, its backends may take to disappear from `pg_stat_activity`. */
const NO_BACKENDS_WITHIN_MS = 5_000

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const fail = (message: string) => Effect.fail(new CaseFailure({ message }))

const check = (condition: boolean, message: string): Effect.Effect<void, CaseFailure> =>
  condition ? Effect.void : fail(message)

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Runs an admin (or other promise-based) step; a rejection is a `CaseFailure` with its message. */
const io = <A>(f: () => Promise<A>): Effect.Effect<A, CaseFailure> =>
  Effect.tryPromise({ try: f, catch: (error) => new CaseFailure({ message: messageOf(error) }) })

const now = Effect.sync(() => performance.now())

const within =
  (ms: number, what: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | CaseFailure, R> =>
    Effect.timeoutFail(self, {
      duration: Duration.millis(ms),
      onTimeout: () => new CaseFailure({ message: `${what}: not done within ${ms} ms` })
    })

const randomInt = (maxInclusive: number) => Math.floor(Math.random() * (maxInclusive + 1))

const inTransaction = (b: Backend) => b.state?.startsWith("idle in transaction") === true
const running = (fragment: string) => (b: Backend) => b.state === "active" && b.query.includes(fragment)
const describeBackends = (backends: ReadonlyArray<Backend>) =>
  JSON.stringify(backends.map((b) => ({ pid: b.pid, state: b.state, query: b.query.slice(0, 60) })))

const backends = (ctx: CaseContext) => io(() => ctx.admin.backends(ctx.app))

/** Waits until the app's backends satisfy `predicate` (polling the server); fails with `message` otherwise. */
const waitForBackends = (
  ctx: CaseContext,
  predicate: (backends: ReadonlyArray<Backend>) => boolean,
  timeoutMs: number,
  message: string
) =>
  io(() =>
    ctx.admin.waitFor(() => ctx.admin.backends(ctx.app), predicate, {
      timeoutMs: Math.max(1, timeoutMs),
      intervalMs: 20,
      message
    })
  )

const waitRunning = (ctx: CaseContext, fragment: string, count = 1, timeoutMs = 5_000) =>
  waitForBackends(
    ctx,
    (bs) => bs.filter(running(fragment)).length >= count,
    timeoutMs,
    `server never showed ${count} backend(s) running ${fragment}`
  )

const waitNotRunning = (ctx: CaseContext, fragment: string, timeoutMs: number, what: string) =>
  waitForBackends(
    ctx,
    (bs) => !bs.some(running(fragment)),
    timeoutMs,
    `${what}: ${fragment} still running on the server`
  )

const waitNoneInTransaction = (ctx: CaseContext, timeoutMs: number, what: string) =>
  waitForBackends(ctx, (bs) => !bs.some(inTransaction), timeoutMs, `${what}: a backend is still idle in transaction`)

const count = (ctx: CaseContext, table: string, where = "true") =>
  io(() => ctx.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${ctx.schema}.${table} WHERE ${where}`)).pipe(
    Effect.map((rows) => rows[0]?.n ?? 0)
  )

const ddl = (ctx: CaseContext, statements: string) => io(() => ctx.admin.query(statements))

/**
 * Interrupts `fiber` without waiting for it, then waits at most `ms` for it to end.
 * Returns its exit and how long the interruption took.
 */
const interruptWithin = <A, E>(fiber: Fiber.Fiber<A, E>, ms: number, what: string) =>
  Effect.gen(function* () {
    const started = yield* now
    yield* Fiber.interruptFork(fiber)
    const exit = yield* Fiber.await(fiber).pipe(within(ms, `${what}: interruption`))
    return { exit, elapsed: (yield* now) - started }
  })

/** An exit that is a success or an interruption only (no failure, no defect). */
const successOrInterrupted = <A, E>(exit: Exit.Exit<A, E>) =>
  Exit.isSuccess(exit) || (Cause.isInterruptedOnly(exit.cause) && !Cause.isEmpty(exit.cause))

/** `_tag: message (cause: SQLSTATE message)` of an error, as far as it has them. */
const describeError = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const e = error as { _tag?: unknown; message?: unknown; cause?: unknown; code?: unknown }
  const head = `${typeof e._tag === "string" ? `${e._tag}: ` : ""}${String(e.message ?? "")}`
  const cause = e.cause as { code?: unknown; message?: unknown } | undefined
  const inner =
    typeof cause === "object" && cause !== null
      ? ` (cause: ${typeof cause.code === "string" ? `${cause.code} ` : ""}${String(cause.message ?? "")})`
      : ""
  return head + inner
}

const describeExit = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return `failure ${describeError(failure.value)}`
  const defect = Cause.dieOption(exit.cause)
  if (Option.isSome(defect)) return `defect ${describeError(defect.value)}`
  return Cause.isInterruptedOnly(exit.cause) ? "interrupted" : Cause.pretty(exit.cause).split("\n")[0]!
}

/**
 * Builds the contender's layer in its own scope, runs `use` with its `SqlClient`, closes the scope, then
 * asserts from the server that nothing is left under the case's `application_name`.
 */
const withContender = <E>(
  ctx: CaseContext,
  options: LayerOptions,
  use: (sql: SqlClient.SqlClient) => Effect.Effect<void, E>
): Effect.Effect<void, unknown> =>
  Effect.gen(function* () {
    yield* Effect.scoped(
      Effect.flatMap(Layer.build(ctx.layer(options)), (env) => use(Context.get(env, SqlClient.SqlClient)))
    )
    yield* noBackendsLeft(ctx)
  })

const noBackendsLeft = (ctx: CaseContext) =>
  waitForBackends(
    ctx,
    (bs) => bs.length === 0,
    NO_BACKENDS_WITHIN_MS,
    `backends left on the server ${NO_BACKENDS_WITHIN_MS} ms after the layer's scope closed`
  ).pipe(Effect.asVoid)

/**
 * The interruption scenarios the demo shows are defined once (cli/src/interruptions.ts) and run here by their shared
 * body; the case judges what the body reports, with these limits (the demo's are its own: it reports, it never stops).
 */
/** Runs a shared scenario's body; what stopped it is the case's failure. */
const scenario = (
  ctx: CaseContext,
  sql: SqlClient.SqlClient,
  body: (run: Bodies.Run) => Effect.Effect<void, Bodies.ScenarioFailure>,
  reporter: Reporter,
  deadlines: Deadlines = STRICT
): Effect.Effect<void, CaseFailure> =>
  Effect.mapError(
    body({ sql, server: ctx.admin, app: ctx.app, deadlines, reporter }),
    (error) => new CaseFailure({ message: error.message })
  )

// ---------------------------------------------------------------------------------------------------------------
// Cases

/**
 * 1. The asyncpg/SQLAlchemy report (the demo's "asyncpg repro", `Interruptions.asyncpgRepro`): an interrupted
 * transaction must not poison the next one.
 */
const asyncpgReproduction: Case = {
  id: "asyncpg-repro",
  contract: "C1/C3",
  title: "interrupted transaction on a pool of 1, five times: fast, clean, never more than 1 backend",
  run: (ctx) =>
    withContender(ctx, { maxConnections: Interruptions.asyncpgRepro.connections }, (sql) =>
      Effect.gen(function* () {
        // Background sampler of the server's view. `watching` is true only while no transaction may be open
        // (from the end of an interruption to the next fork); `window` counts the changes. A sample counts as
        // dirty only if the whole round trip fell inside one watching window (the server took its snapshot then).
        const seen = { max: 0, dirty: [] as Array<string>, watching: false, window: 0 }
        const setWatching = (watching: boolean) => {
          seen.watching = watching
          seen.window++
        }
        const sampler = yield* Effect.fork(
          Effect.suspend(() => {
            const watching = seen.watching
            const window = seen.window
            return Effect.map(backends(ctx), (bs) => {
              seen.max = Math.max(seen.max, bs.length)
              if (watching && window === seen.window && bs.some(inTransaction)) seen.dirty.push(describeBackends(bs))
            })
          }).pipe(Effect.repeat(Schedule.spaced(Duration.millis(10))))
        )
        let iteration = 0
        const where = () => `iteration ${iteration}: `
        const limits = interruptionLimits(where)
        yield* scenario(ctx, sql, (run) => Bodies.repro(run, Interruptions.asyncpgRepro), {
          ...limits,
          iteration: (i) => {
            iteration = i
            setWatching(false)
          },
          ready: (view) => {
            const ms = view.firstStatementMs
            need(
              ms !== undefined && ms < 1_000,
              `${where()}the first statement ${ms === undefined ? "had not completed" : `took ${Math.round(ms)} ms to complete`} (limit 1000 ms)`
            )
            need(
              allRunning(view),
              `${where()}when the interruption was due the server did not show ${view.fragment} running: ${describeBackends(view.backends)}`
            )
          },
          interrupted: (interruption) => {
            limits.interrupted(interruption)
            setWatching(true)
          },
          after: (view) =>
            need(
              view.inTransaction.length === 0,
              `${where()}right after the interruption the server shows ${describeBackends(view.backends)}`
            )
        })
        yield* Fiber.interrupt(sampler)
        const pool = Interruptions.asyncpgRepro.connections
        yield* check(seen.max <= pool, `the server showed ${seen.max} backends for a pool of ${pool}`)
        yield* check(
          seen.dirty.length === 0,
          `the server showed a backend idle in transaction after an interruption: ${seen.dirty[0]}`
        )
      })
    )
}

/** 2. Mid-statement interruption, by each way Effect interrupts. */
const midStatement: Case = {
  id: "mid-statement",
  contract: "C2/C3",
  title: "pg_sleep(10) stops on the server promptly when interrupted by Fiber.interrupt, timeout, race, scope close",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 2 }, (sql) =>
      Effect.gen(function* () {
        const statement = sql`select pg_sleep(10)`
        const TIMER_MS = 1_500
        const stopsOnServer = (what: string, since: number, budgetMs: number) =>
          Effect.flatMap(now, (t) => waitNotRunning(ctx, "pg_sleep(10)", budgetMs - (t - since), what))

        // Fiber.interrupt
        {
          const fiber = yield* Effect.fork(statement)
          yield* waitRunning(ctx, "pg_sleep(10)")
          const started = yield* now
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "Fiber.interrupt")
          yield* check(elapsed < 3_000, `Fiber.interrupt took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Fiber.interrupt", started, 2_000)
        }
        // Effect.timeout
        {
          const started = yield* now
          const fiber = yield* Effect.fork(Effect.timeout(statement, Duration.millis(TIMER_MS)))
          yield* waitRunning(ctx, "pg_sleep(10)")
          const exit = yield* Fiber.await(fiber).pipe(within(TIMER_MS + 3_000, "Effect.timeout"))
          const elapsed = (yield* now) - started - TIMER_MS
          yield* check(
            Exit.isFailure(exit) && Option.isSome(Cause.failureOption(exit.cause)),
            `Effect.timeout: expected a TimeoutException, got ${describeExit(exit)}`
          )
          yield* check(elapsed < 3_000, `Effect.timeout: the interruption took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Effect.timeout", started + TIMER_MS, 2_000)
        }
        // Effect.race with a faster effect
        {
          const started = yield* now
          const fiber = yield* Effect.fork(
            Effect.race(Effect.as(statement, "statement"), Effect.as(Effect.sleep(Duration.millis(TIMER_MS)), "timer"))
          )
          yield* waitRunning(ctx, "pg_sleep(10)")
          const exit = yield* Fiber.await(fiber).pipe(within(TIMER_MS + 3_000, "Effect.race"))
          const elapsed = (yield* now) - started - TIMER_MS
          yield* check(
            Exit.isSuccess(exit) && exit.value === "timer",
            `Effect.race: expected the timer to win, got ${describeExit(exit)}`
          )
          yield* check(elapsed < 3_000, `Effect.race: the interruption took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Effect.race", started + TIMER_MS, 2_000)
        }
        // Closing a parent scope
        {
          const scope = yield* Scope.make()
          yield* Effect.forkIn(statement, scope)
          yield* waitRunning(ctx, "pg_sleep(10)")
          const started = yield* now
          yield* Scope.close(scope, Exit.void).pipe(within(3_000, "Scope.close"))
          const elapsed = (yield* now) - started
          yield* check(elapsed < 3_000, `Scope.close took ${Math.round(elapsed)} ms`)
          yield* stopsOnServer("Scope.close", started, 2_000)
        }
        // The pool still works.
        yield* sql`select 1`.pipe(within(1_000, "a statement after the interruptions"))
      })
    )
}

/** 3. A waiter interrupted while waiting for the only connection, racing the hand-off, must not lose the slot. */
const interruptedWaiter: Case = {
  id: "interrupted-waiter",
  contract: "C5",
  title: "20 waiters interrupted around the hand-off (statement, withTransaction, reserve) never lose the pool slot",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1 }, (sql) =>
      Effect.gen(function* () {
        const selectOne = (connection: Connection) => connection.execute("select 1", [], undefined)
        for (let i = 0; i < 20; i++) {
          const what = `iteration ${i + 1}`
          const acquired = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const hold = Effect.zipRight(Deferred.succeed(acquired, undefined), Deferred.await(release))
          const holder = yield* Effect.fork(
            i % 2 === 0
              ? sql.withTransaction(Effect.zipRight(sql`select 1`, hold))
              : Effect.scoped(Effect.flatMap(sql.reserve, (c) => Effect.zipRight(selectOne(c), hold)))
          )
          yield* Deferred.await(acquired).pipe(within(5_000, `${what}: holder acquiring`))
          const waiting =
            i % 3 === 0
              ? Effect.asVoid(sql`select 1`)
              : i % 3 === 1
                ? Effect.asVoid(sql.withTransaction(sql`select 1`))
                : Effect.scoped(Effect.asVoid(Effect.flatMap(sql.reserve, selectOne)))
          const waiter = yield* Effect.fork(waiting)
          if (i < 6) {
            // The waiter is surely queued (no server-side signal exists for that), then interrupted, then the
            // holder lets go.
            yield* Effect.sleep(Duration.millis(30))
            yield* Fiber.interruptFork(waiter)
            yield* Deferred.succeed(release, undefined)
          } else {
            // Race the hand-off: release and interruption at random times within 0–10 ms of each other.
            yield* Effect.fork(
              Effect.zipRight(Effect.sleep(Duration.millis(randomInt(10))), Deferred.succeed(release, undefined))
            )
            yield* Effect.sleep(Duration.millis(randomInt(10)))
            yield* Fiber.interruptFork(waiter)
          }
          const holderExit = yield* Fiber.await(holder).pipe(within(3_000, `${what}: holder finishing`))
          yield* check(Exit.isSuccess(holderExit), `${what}: the holder failed: ${describeExit(holderExit)}`)
          const waiterExit = yield* Fiber.await(waiter).pipe(within(3_000, `${what}: interrupted waiter ending`))
          yield* check(
            successOrInterrupted(waiterExit),
            `${what}: the interrupted waiter ended with ${describeExit(waiterExit)}`
          )
          yield* sql`select 1`.pipe(within(1_000, `${what}: a new statement after the interrupted waiter (lost slot?)`))
        }
      })
    )
}

/** 4. Interrupted between statements of a transaction: rolled back, nothing idle in transaction. */
const betweenStatements: Case = {
  id: "between-statements",
  contract: "C3",
  title: "interrupted between statements in a transaction: the row is not there, no backend idle in transaction",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const inserted = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(
            sql.withTransaction(
              sql
                .unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1)`)
                .pipe(Effect.zipRight(Deferred.succeed(inserted, undefined)), Effect.zipRight(Effect.never))
            )
          )
          yield* Deferred.await(inserted).pipe(within(5_000, "insert"))
          yield* waitForBackends(ctx, (bs) => bs.some(inTransaction), 5_000, "transaction never seen open")
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "between statements")
          yield* check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
          yield* waitNoneInTransaction(ctx, 2_000, "after the interruption")
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the interrupted transaction's row is visible (${rows} rows)`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the interruption"))
        })
      )
      const rows = yield* count(ctx, "t")
      yield* check(rows === 0, `after the layer closed the interrupted transaction's row is there (${rows} rows)`)
    })
}

/** 5. Interrupted while COMMIT runs (a deferred constraint trigger sleeps in it). */
const duringCommit: Case = {
  id: "during-commit",
  contract: "C3",
  title: "interrupted during a slow COMMIT: bounded, all-or-nothing, no backend left running COMMIT",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(
        ctx,
        `CREATE TABLE ${ctx.schema}.t (id int);
         CREATE FUNCTION ${ctx.schema}.slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.id = 1 THEN PERFORM pg_sleep(5); END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON ${ctx.schema}.t
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${ctx.schema}.slow_commit();`
      )
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const fiber = yield* Effect.fork(
            sql.withTransaction(sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1), (2), (3)`))
          )
          yield* waitForBackends(
            ctx,
            (bs) => bs.some((b) => b.state === "active" && b.query.trim().toUpperCase() === "COMMIT"),
            5_000,
            "server never showed COMMIT active"
          )
          const { elapsed } = yield* interruptWithin(fiber, 3_000, "during COMMIT")
          yield* check(elapsed < 3_000, `interruption took ${Math.round(elapsed)} ms`)
          yield* waitForBackends(
            ctx,
            (bs) => !bs.some((b) => b.state === "active" && b.query.trim().toUpperCase() === "COMMIT"),
            2_000,
            "a backend is still running COMMIT after the interruption"
          )
          yield* waitNoneInTransaction(ctx, 2_000, "after the interruption")
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0 || rows === 3, `the transaction is half there: ${rows} of 3 rows`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the interruption"))
        })
      )
      const rows = yield* count(ctx, "t")
      yield* check(rows === 0 || rows === 3, `after the layer closed the transaction is half there: ${rows} of 3 rows`)
    })
}

/** 6. Closing the layer while a daemon fiber (outside the layer's scope) is inside a transaction. */
const shutdownWithDaemon: Case = {
  id: "shutdown-daemon",
  contract: "C1",
  title: "layer closed while a daemon fiber's transaction waits: it never commits, no backend remains",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      const scope = yield* Scope.make()
      const gate = yield* Deferred.make<void>()
      const firstInserted = yield* Deferred.make<void>()
      yield* Effect.gen(function* () {
        const env = yield* Layer.buildWithScope(ctx.layer({ maxConnections: 2 }), scope)
        const sql = Context.get(env, SqlClient.SqlClient)
        const insert = (id: number) => sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (${id})`)
        const daemon = yield* Effect.forkDaemon(
          sql.withTransaction(
            insert(1).pipe(
              Effect.zipRight(Deferred.succeed(firstInserted, undefined)),
              Effect.zipRight(Deferred.await(gate)),
              Effect.zipRight(insert(2))
            )
          )
        )
        yield* Effect.gen(function* () {
          yield* Deferred.await(firstInserted).pipe(within(5_000, "first insert"))
          yield* Scope.close(scope, Exit.void).pipe(within(5_000, "closing the layer's scope"))
          yield* Deferred.succeed(gate, undefined)
          const exit = yield* Fiber.await(daemon).pipe(within(5_000, "the daemon fiber ending after the gate opened"))
          yield* check(
            Exit.isFailure(exit),
            "the daemon's transaction succeeded (committed) after the layer's scope had closed"
          )
          yield* noBackendsLeft(ctx)
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the daemon's transaction committed after the layer closed: ${rows} rows`)
        }).pipe(Effect.ensuring(Fiber.interruptFork(daemon)))
      }).pipe(Effect.ensuring(Effect.zipRight(Deferred.succeed(gate, undefined), Scope.close(scope, Exit.void))))
    })
}

/**
 * 7. Many fibers, many transactions, half of them interrupted at random. Three rounds: one round interrupts few
 * fibers mid-statement by chance, three make the outcome reliable.
 */
const interruptionStorm: Case = {
  id: "interruption-storm",
  contract: "C3/C4",
  title: "3 rounds of 32 fibers x 5 transactions on a pool of 4, half interrupted at random: atomic, no collateral",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (tx int, n int)`)
      const ROUNDS = 3
      const FIBERS = 32
      const TX_PER_FIBER = 5
      yield* withContender(ctx, { maxConnections: 4 }, (sql) =>
        Effect.gen(function* () {
          const insert = (tx: number, n: number) => sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (${tx}, ${n})`)
          for (let round = 1; round <= ROUNDS; round++) {
            const what = `round ${round}`
            const fiberKey = (i: number) => round * 1_000 + i
            const victims = new Set(
              Array.from({ length: FIBERS }, (_, i) => i)
                .sort(() => Math.random() - 0.5)
                .slice(0, FIBERS / 2)
            )
            const started = yield* Effect.all(Array.from({ length: FIBERS }, () => Deferred.make<void>()))
            const begin = yield* now
            const fibers = yield* Effect.forEach(
              Array.from({ length: FIBERS }, (_, i) => i),
              (i) =>
                Effect.fork(
                  Effect.forEach(
                    Array.from({ length: TX_PER_FIBER }, (_, j) => fiberKey(i) * 100 + j),
                    (tx) =>
                      sql.withTransaction(
                        insert(tx, 1).pipe(
                          Effect.zipRight(Deferred.succeed(started[i]!, undefined)),
                          Effect.zipRight(sql`select pg_sleep(0.005)`),
                          Effect.zipRight(insert(tx, 2))
                        )
                      ),
                    { discard: true }
                  )
                )
            )
            // Each victim is interrupted 0–20 ms after its first transaction got going.
            yield* Effect.forEach(
              [...victims],
              (i) =>
                Effect.fork(
                  Deferred.await(started[i]!).pipe(
                    Effect.zipRight(Effect.sleep(Duration.millis(randomInt(20)))),
                    Effect.zipRight(Fiber.interruptFork(fibers[i]!))
                  )
                ),
              { discard: true }
            )
            const exits = yield* Effect.forEach(fibers, (fiber) => Fiber.await(fiber)).pipe(
              within(5_000, `${what}: the storm (all fibers ending)`)
            )
            const elapsed = (yield* now) - begin
            const collateral = exits.flatMap((exit, i) =>
              victims.has(i) || Exit.isSuccess(exit) ? [] : [`fiber ${i}: ${describeExit(exit)}`]
            )
            yield* check(
              collateral.length === 0,
              `${what}: ${collateral.length} fibers nobody interrupted failed, e.g. ${collateral[0]}`
            )
            const victimFailures = exits.flatMap((exit, i) =>
              victims.has(i) && !successOrInterrupted(exit) ? [`fiber ${i}: ${describeExit(exit)}`] : []
            )
            yield* check(
              victimFailures.length === 0,
              `${what}: ${victimFailures.length} interrupted fibers failed instead of being interrupted, e.g. ${victimFailures[0]}`
            )
            yield* waitNoneInTransaction(ctx, 2_000, `${what}: after the storm`)
            const broken = yield* io(() =>
              ctx.admin.query<{ tx: number; n: number }>(
                `SELECT tx, count(*)::int AS n FROM ${ctx.schema}.t GROUP BY tx HAVING count(*) <> 2 ORDER BY tx`
              )
            )
            yield* check(
              broken.length === 0,
              `${what}: non-atomic transactions (tx, rows): ${JSON.stringify(broken.slice(0, 5))}`
            )
            const survivors = [...Array(FIBERS).keys()].filter((i) => !victims.has(i)).map(fiberKey)
            const committed = yield* count(ctx, "t", `tx / 100 IN (${survivors.join(",")})`)
            yield* check(
              committed === survivors.length * TX_PER_FIBER * 2,
              `${what}: uninterrupted fibers should have committed ${survivors.length * TX_PER_FIBER * 2} rows, found ${committed}`
            )
            yield* check(elapsed < 5_000, `${what}: the storm took ${Math.round(elapsed)} ms`)
          }
        })
      )
    })
}

/**
 * 8. A saturated pool (the demo's "saturation", `Interruptions.saturation`): every connection runs a long statement
 * and as many fibers again wait for one; interrupting all of them stops all of them.
 */
const saturation: Case = {
  id: "saturation",
  contract: "C2",
  title: "pool of 4 saturated by pg_sleep(30), 4 more waiting: interrupting all 8 stops all on the server within 2 s",
  run: (ctx) =>
    withContender(ctx, { maxConnections: Interruptions.saturation.connections }, (sql) =>
      scenario(
        ctx,
        sql,
        (run) => Bodies.saturation(run, Interruptions.saturation),
        {
          ...interruptionLimits(() => ""),
          ready: (view) =>
            need(
              allRunning(view),
              `server never showed ${view.expected} backend(s) running ${view.fragment}: ${describeBackends(view.backends)}`
            ),
          stopped: (view) =>
            need(
              view.ok,
              `${Math.round(view.ms)} ms after interrupting all: ${view.fragment} still running on the server: ${describeBackends(view.running)}`
            ),
          after: (view) =>
            need(
              view.running.length === 0 && view.inTransaction.length === 0,
              `after the interruptions the server shows ${describeBackends(view.backends)}`
            )
        },
        { ...STRICT, stoppedWithinMs: 2_000 }
      )
    )
}

/** 9. A COMMIT the server rejects (deferred unique constraint) is a typed failure. */
const failedCommit: Case = {
  id: "failed-commit",
  contract: "C6",
  title: "COMMIT failing on a deferred constraint fails withTransaction with a typed SqlError, not a defect",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(
        ctx,
        `CREATE TABLE ${ctx.schema}.t (id int, CONSTRAINT t_id_unique UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`
      )
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const exit = yield* sql
            .withTransaction(sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1), (1)`))
            .pipe(Effect.either, Effect.exit, within(5_000, "the transaction"))
          yield* check(
            Exit.isSuccess(exit),
            `withTransaction died instead of failing with a typed error: ${Exit.isFailure(exit) ? describeExit(exit) : ""}`
          )
          if (Exit.isSuccess(exit)) {
            const either = exit.value
            yield* check(either._tag === "Left", "withTransaction succeeded although COMMIT failed")
            if (either._tag === "Left") {
              const tag = (either.left as { _tag?: unknown })._tag
              yield* check(tag === "SqlError", `expected an SqlError, got ${String(tag)}`)
            }
          }
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the failed transaction's rows are there (${rows})`)
          yield* waitNoneInTransaction(ctx, 2_000, "after the failed COMMIT")
          yield* sql`select 1`.pipe(within(1_000, "a statement after the failed COMMIT"))
        })
      )
    })
}

/** 10. The server answers COMMIT with ROLLBACK because a statement failed (and the body swallowed the error). */
const commitRolledBack: Case = {
  id: "commit-rolled-back",
  contract: "C6",
  title: "a COMMIT the server turns into ROLLBACK fails withTransaction with a typed SqlError",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          const exit = yield* sql
            .withTransaction(
              sql
                .unsafe(`INSERT INTO ${ctx.schema}.t VALUES (1)`)
                .pipe(
                  Effect.zipRight(sql`select 1/0`.pipe(Effect.catchAll(() => Effect.void))),
                  Effect.as("body succeeded")
                )
            )
            .pipe(Effect.either, Effect.exit, within(5_000, "the transaction"))
          yield* check(Exit.isSuccess(exit), `withTransaction died: ${Exit.isFailure(exit) ? describeExit(exit) : ""}`)
          if (Exit.isSuccess(exit)) {
            const either = exit.value
            yield* check(
              either._tag === "Left",
              "withTransaction succeeded silently although the server answered COMMIT with ROLLBACK"
            )
            if (either._tag === "Left") {
              const tag = (either.left as { _tag?: unknown })._tag
              yield* check(tag === "SqlError", `expected an SqlError, got ${String(tag)}`)
            }
          }
          const rows = yield* count(ctx, "t")
          yield* check(rows === 0, `the rolled-back transaction's row is there (${rows})`)
          yield* sql`select 1`.pipe(within(1_000, "a statement after the rolled-back COMMIT"))
        })
      )
    })
}

/** 11. A raw BEGIN on a reserved connection, left open when the reservation's scope closes. */
const rawBeginOnReserve: Case = {
  id: "raw-begin-reserve",
  contract: "C3",
  title: "raw BEGIN + insert on sql.reserve, scope closed without COMMIT: rolled back, no dirty reuse",
  run: (ctx) =>
    Effect.gen(function* () {
      yield* ddl(ctx, `CREATE TABLE ${ctx.schema}.t (id int)`)
      yield* withContender(ctx, { maxConnections: 1 }, (sql) =>
        Effect.gen(function* () {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const connection = yield* sql.reserve
              yield* connection.execute("BEGIN", [], undefined)
              yield* connection.execute(`INSERT INTO ${ctx.schema}.t VALUES (1)`, [], undefined)
            })
          ).pipe(within(5_000, "the reserved connection's work"))
          yield* waitNoneInTransaction(ctx, 2_000, "after the reservation's scope closed")
          // The next borrower gets the (only) connection: its autocommit insert must really commit, i.e. not run
          // inside the abandoned transaction.
          yield* sql.unsafe(`INSERT INTO ${ctx.schema}.t VALUES (2)`).pipe(within(1_000, "the next borrower's insert"))
          const afterNext = yield* backends(ctx)
          yield* check(
            !afterNext.some(inTransaction),
            `after the next borrower's statement the server shows ${describeBackends(afterNext)}`
          )
          const first = yield* count(ctx, "t", "id = 2")
          yield* check(
            first === 1,
            "the next borrower's autocommit insert is not visible: it ran inside the open BEGIN"
          )
        })
      )
      const abandoned = yield* count(ctx, "t", "id = 1")
      const next = yield* count(ctx, "t", "id = 2")
      yield* check(abandoned === 0, "the insert after the raw BEGIN was committed")
      yield* check(next === 1, "the next borrower's autocommit insert was lost")
    })
}

/** 12. Waiting for a connection longer than the acquire timeout fails with a typed error. */
const acquireTimeout: Case = {
  id: "acquire-timeout",
  contract: "C5",
  title: "pool of 1 held: a statement fails with a typed SqlError after the acquire timeout (300 ms)",
  run: (ctx) =>
    withContender(ctx, { maxConnections: 1, acquireTimeoutMs: 300 }, (sql) =>
      Effect.gen(function* () {
        const acquired = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(
          Effect.scoped(
            Effect.flatMap(sql.reserve, () =>
              Effect.zipRight(Deferred.succeed(acquired, undefined), Deferred.await(release))
            )
          )
        )
        yield* Deferred.await(acquired).pipe(within(5_000, "holder acquiring"))
        const started = yield* now
        const result = yield* sql`select 1`.pipe(Effect.exit, Effect.timeoutOption(Duration.millis(3_000)))
        const elapsed = (yield* now) - started
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder).pipe(within(3_000, "holder finishing"))
        if (Option.isNone(result)) {
          return yield* fail("a statement waiting for a held pool of 1 neither failed nor succeeded within 3 s")
        }
        const exit = result.value
        yield* check(Exit.isFailure(exit), "the statement succeeded although the only connection was held")
        if (Exit.isFailure(exit)) {
          const failure = Cause.failureOption(exit.cause)
          yield* check(
            Option.isSome(failure) && (failure.value as { _tag?: unknown })._tag === "SqlError",
            `expected a typed SqlError, got ${describeExit(exit)}`
          )
        }
        yield* check(elapsed >= 250, `the acquire timeout fired after ${Math.round(elapsed)} ms (configured 300 ms)`)
        yield* sql`select 1`.pipe(within(1_000, "a statement after the acquire timeout"))
      })
    )
}

export const cases: ReadonlyArray<Case> = [
  asyncpgReproduction,
  midStatement,
  interruptedWaiter,
  betweenStatements,
  duringCommit,
  shutdownWithDaemon,
  interruptionStorm,
  saturation,
  failedCommit,
  commitRolledBack,
  rawBeginOnReserve,
  acquireTimeout
]

// ---------------------------------------------------------------------------------------------------------------
// Runner

export const testName = (testCase: Case) => `${testCase.id} [${testCase.contract}] ${testCase.title}`

/**
 * Runs one case against `contender`: its own admin connection, `application_name` and schema; a hard time limit
 * (see `withTimeLimit`: even a contender that cannot be interrupted does not hold the test); afterwards,
 * whatever the outcome, leftover backends of the case are terminated and the schema is dropped, so one case's
 * leaks do not spill into the next.
 */
export const runCase = (testCase: Case, contender: Contender, url: string): Effect.Effect<void, unknown> =>
  Effect.acquireUseRelease(
    io(() => Admin.connect(url)),
    (admin) => {
      const app = uniqueAppName(`${contender.name}-${testCase.id}`)
      const schema = `conformance_${randomBytes(6).toString("hex")}`
      const ctx: CaseContext = {
        url,
        admin,
        app,
        schema,
        layer: (options) => contender.layer(url, app, options)
      }
      return io(() => admin.query(`CREATE SCHEMA ${schema}`)).pipe(
        Effect.zipRight(withTimeLimit(testCase.run(ctx), testCase.id)),
        Effect.ensuring(cleanUp(admin, app, schema))
      )
    },
    (admin) => Effect.promise(() => admin.close())
  )

/**
 * Runs `self` on a daemon fiber and returns its outcome as soon as `self` itself has ended, without waiting for
 * the fibers it forked (a fiber only completes after its children were interrupted, and a contender may make that
 * take forever), and at the latest after `CASE_TIME_LIMIT_MS`. The daemon is then interrupted in the background.
 */
const withTimeLimit = <E>(self: Effect.Effect<void, E>, id: string): Effect.Effect<void, E | CaseFailure> =>
  Effect.gen(function* () {
    const outcome = yield* Deferred.make<void, E>()
    const fiber = yield* Effect.forkDaemon(Effect.flatMap(Effect.exit(self), (exit) => Deferred.done(outcome, exit)))
    return yield* Deferred.await(outcome).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(CASE_TIME_LIMIT_MS),
        onTimeout: () => new CaseFailure({ message: `${id}: case time limit of ${CASE_TIME_LIMIT_MS} ms exceeded` })
      }),
      Effect.ensuring(Fiber.interruptFork(fiber))
    )
  })

const cleanUp = (admin: Admin, app: string, schema: string): Effect.Effect<void> =>
  Effect.promise(async () => {
    try {
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
        [app]
      )
      await admin.waitForNoBackends(app, 10_000).catch(() => undefined)
      await admin.query(`SET lock_timeout = '5s'`)
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    } catch {
      // Best effort: never hide the case's own outcome.
    }
  })
