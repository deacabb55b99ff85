/**
 * A drop-in replacement for `@effect/sql-pg`'s `PgClient` layer whose connections never
 * outlive their scope: interruption always ends in a verified-clean session or a terminated
 * backend, within a bound derived from the configuration.
 *
 * @since 0.1.0
 */

import * as Reactivity from "@effect/experimental/Reactivity"
import * as Client from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import type * as Pg from "pg"
import Cursor from "pg-cursor"
import * as CoreAudit from "./core/audit.js"
import * as CoreConfig from "./core/config.js"
import { checkDriver } from "./core/driver.js"
import { CoreError, type HolderReport, leakAnnotations, leakMessage } from "./core/errors.js"
import { combineEvents } from "./core/events.js"
import { ListenHub } from "./core/listen.js"
import { type MetricSink, poolMetrics } from "./core/metrics.js"
import * as CoreOptions from "./core/options.js"
import { Pool } from "./core/pool.js"
import type { Session, SessionConfig, StatementConfig } from "./core/session.js"
import { callerStack, type StackSite } from "./core/stack.js"
import * as Core from "./internal/effect.js"
import { listen as listenOn } from "./internal/listen.js"
import { QuietSpan } from "./internal/span.js"
import { directStatements, spansObservable } from "./internal/statement.js"
import { sqlError } from "./WardenError.js"
import * as WardenPool from "./WardenPool.js"

/**
 * Server-side safety settings sent in every session's startup packet (defence in depth for
 * when even the out-of-band terminate cannot reach the server). `false` sends none, for
 * proxies that refuse startup options. Fields: `idleInTransactionSessionTimeout` (default 60 s),
 * `clientConnectionCheckInterval` (default 1 s), `tcpKeepalives` (default idle 30 s, interval
 * 10 s, count 3); `null` leaves the server's value.
 *
 * @since 0.1.0
 * @category models
 */
export type ServerSafety = CoreOptions.ServerSafetyOptions<Duration.DurationInput>

/**
 * The configuration: every field of `@effect/sql-pg`'s `PgClientConfig`, plus pg-warden's
 * acquire timeout, cleanup deadlines and server safety settings.
 *
 * @since 0.1.0
 * @category models
 */
export interface WardenClientConfig extends PgClient.PgClientConfig, CoreOptions.WardenOptions<Duration.DurationInput> {
  /**
   * How many parameterised statements each connection keeps prepared (named), so the server
   * parses and plans them once per connection. Default 256; 0 turns it off (for example
   * behind PgBouncer in transaction mode). Statements without parameters always use the
   * simple protocol.
   */
  readonly statementCacheSize?: number | undefined
  /**
   * Runs on every new connection before its first use, with an `SqlClient` whose statements run on
   * that connection (for `search_path`, a role, settings). Bounded by `connectTimeout`; a failure
   * fails the connection attempt. The settings and role it leaves are the session's baseline: every
   * reset restores them.
   */
  readonly onConnect?: ((sql: Client.SqlClient) => Effect.Effect<unknown, SqlError>) | undefined
  /**
   * Effects run when the pool opens a connection, grants a lease, ends one (with the release
   * protocol's outcome) and terminates a backend: for logging and counting. Each runs in a fiber of
   * its own in the Layer's runtime, so it never delays the pool; it is interrupted after
   * `terminateTimeout`, and its failure is logged, never propagated.
   */
  readonly hooks?: CoreOptions.WardenHooks<Effect.Effect<unknown, unknown>> | undefined
  /**
   * Further run-time parameters for the startup packet (`{ work_mem: "64MB" }`). A parameter also
   * set by pg-warden's safety defaults takes the value given here; the same parameter given
   * differently here, in the URL's `options` or by `statementTimeout` / `lockTimeout` fails with
   * `InvalidConfig`.
   */
  readonly startupParameters?: Readonly<Record<string, string>> | undefined
}

/**
 * The defaults, in milliseconds where they are durations.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: typeof CoreConfig.defaults = CoreConfig.defaults

/**
 * The upper bound on how long releasing one interrupted connection can take: the sum of the
 * cleanup deadlines. Interrupting a fiber that holds a connection completes within it.
 *
 * @since 0.1.0
 * @category utils
 */
export const cleanupBound = (config: WardenClientConfig): Duration.Duration =>
  Duration.millis(CoreConfig.cleanupBoundMs(coreInput(config)))

/**
 * @since 0.1.0
 * @category models
 */
export interface WardenClient extends PgClient.PgClient {
  readonly pool: WardenPool.WardenPool
}

const ATTR_DB_SYSTEM_NAME = "db.system.name"
const ATTR_DB_NAMESPACE = "db.namespace"
const ATTR_SERVER_ADDRESS = "server.address"
const ATTR_SERVER_PORT = "server.port"

/** pg-warden's options as the core takes them: durations in milliseconds, the password revealed. */
const coreInput = (config: WardenClientConfig): CoreConfig.ConfigInput => ({
  url: config.url ? Redacted.value(config.url) : undefined,
  host: config.host,
  port: config.port,
  database: config.database,
  user: config.username,
  password: config.password !== undefined ? Redacted.value(config.password) : undefined,
  ssl: config.ssl as Pg.ClientConfig["ssl"],
  types: config.types,
  stream: config.stream as Pg.ClientConfig["stream"],
  maxConnections: config.maxConnections,
  minConnections: config.minConnections,
  connectTimeout: ms(config.connectTimeout),
  idleTimeout: ms(config.idleTimeout),
  connectionTTL: ms(config.connectionTTL),
  applicationName: config.applicationName,
  statementCacheSize: config.statementCacheSize,
  startupParameters: config.startupParameters,
  ...CoreOptions.wardenInput(config, (input) => Duration.toMillis(Duration.decode(input)))
})

const ms = (input: Duration.DurationInput | undefined): number | undefined =>
  input === undefined ? undefined : Duration.toMillis(Duration.decode(input))

/** Validates the configuration (in the core) and derives the pool's and `PgClient.config`. */
const resolveConfig = (
  config: WardenClientConfig,
  adopted?: CoreConfig.Adopted
): Effect.Effect<{ pool: CoreConfig.Resolved["pool"]; client: PgClient.PgClientConfig }, SqlError> =>
  Effect.try({
    try: () => {
      const resolved = CoreConfig.resolveConfig(coreInput(config), adopted)
      const target = resolved.target
      const client: PgClient.PgClientConfig = {
        ...config,
        applicationName: target.applicationName,
        host: target.host,
        port: target.port,
        username: target.user,
        database: target.database,
        password: config.password ?? (target.password !== undefined ? Redacted.make(target.password) : undefined)
      }
      return { client, pool: resolved.pool }
    },
    catch: (error) =>
      error instanceof CoreError
        ? Core.toSqlError(error)
        : sqlError("InvalidConfig", String(error), error !== undefined ? { cause: error } : undefined)
  })

type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

const rowsOf = (result: any): ReadonlyArray<any> =>
  Array.isArray(result) ? result.map((r: Pg.QueryResult) => r.rows ?? []) : (result.rows ?? [])

const asRows = (transformRows: TransformRows): ((result: any) => ReadonlyArray<any>) =>
  transformRows ? (result) => transformRows(rowsOf(result)) : rowsOf
const asResult = (result: unknown): unknown => result
const asArrayRows = (result: any): ReadonlyArray<ReadonlyArray<unknown>> => (result as Pg.QueryArrayResult).rows

/**
 * The `Connection` methods of `@effect/sql` over `run` (one statement, on a pooled session or a
 * held one) and `executeStream` (a cursor). Methods, not closures: a transaction makes one.
 */
abstract class StatementConnection implements Connection {
  protected abstract run<A>(config: StatementConfig, onResult: (result: any) => A): Effect.Effect<A, SqlError>

  abstract executeStream(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: TransformRows
  ): Stream.Stream<any, SqlError>

  execute(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.run({ text: sql, values: params as Array<unknown> }, asRows(transformRows))
  }

  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    return this.run({ text: sql, values: params as Array<unknown> }, asResult)
  }

  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    return this.run({ text: sql, values: params as Array<unknown>, rowMode: "array" }, asArrayRows)
  }

  executeUnprepared(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.execute(sql, params, transformRows)
  }
}

/** Statements outside a transaction: each on a pooled session for that statement only. */
class PooledConnection extends StatementConnection {
  constructor(
    private readonly pool: Pool,
    private readonly stream: (
      sql: string,
      params: ReadonlyArray<unknown>,
      transformRows: TransformRows
    ) => Stream.Stream<any, SqlError>
  ) {
    super()
  }

  protected run<A>(config: StatementConfig, onResult: (result: any) => A): Effect.Effect<A, SqlError> {
    return Core.pooledStatement(this.pool, config, onResult)
  }

  executeStream(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.stream(sql, params, transformRows)
  }
}

const CURSOR_BATCH = 128

/** The same custom fragment `@effect/sql-pg` compiles for `sql.json`. */
const PgJson = Statement.custom<PgClient.PgCustom>("PgJson")

/**
 * Streams rows with a server-side cursor. Closing the stream (end, failure, interruption)
 * closes the cursor within the drain deadline; a cursor that does not close in time leaves
 * the statement in flight, which the release protocol cancels or terminates.
 */
const cursorStream = (
  session: Session,
  sql: string,
  params: ReadonlyArray<unknown>,
  transformRows: TransformRows
): Effect.Effect<Stream.Stream<any, SqlError>, SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const refusal = session.refusal()
    if (refusal !== undefined) return yield* Effect.fail(Core.toSqlError(refusal))
    session.note(sql)
    if (session.beginPending) {
      // A cursor cannot carry BEGIN: open the transaction first.
      session.beginPending = false
      yield* Core.run(session, { text: "BEGIN" }, () => undefined)
    }
    const cursor = new Cursor(sql, params as Array<unknown>)
    const tracked = session.sendTracked(cursor)
    let finished = false
    yield* Effect.addFinalizer(() =>
      finished
        ? Effect.void
        : Effect.async<void>((resume) => {
            const timer = setTimeout(() => resume(Effect.void), session.config.deadlines.drain)
            try {
              cursor.close(() => {
                clearTimeout(timer)
                tracked.done()
                resume(Effect.void)
              })
            } catch {
              clearTimeout(timer)
              resume(Effect.void)
            }
          })
    )
    const pull = Effect.async<Chunk.Chunk<any>, Option.Option<SqlError>>((resume) => {
      cursor.read(CURSOR_BATCH, (error: Error | undefined, rows: Array<any>) => {
        if (error) {
          finished = true
          tracked.done(error)
          resume(Effect.fail(Option.some(Core.statementError(error))))
        } else if (rows.length > 0) {
          resume(Effect.succeed(Chunk.unsafeFromArray(transformRows ? transformRows(rows) : rows)))
        } else {
          finished = true
          cursor.close(() => tracked.done())
          resume(Effect.fail(Option.none()))
        }
      })
    })
    return Stream.repeatEffectChunkOption(pull)
  })

/** A session held for a scope (reserve, transaction). Using it after its scope closed fails. */
class LeasedConnection extends StatementConnection {
  active = true

  constructor(readonly session: Session) {
    super()
  }

  protected run<A>(config: StatementConfig, onResult: (result: any) => A): Effect.Effect<A, SqlError> {
    return this.active ? Core.run(this.session, config, onResult) : Effect.fail(usedAfterScope)
  }

  executeStream(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.active
      ? Stream.unwrapScoped(cursorStream(this.session, sql, params, transformRows))
      : Stream.fail(usedAfterScope)
  }
}

const usedAfterScope = new SqlError({ message: "Connection used after its scope was closed" })

/**
 * Makes a client over a new pool. The pool closes with the scope: leased connections are
 * revoked and rolled back or terminated, within the cleanup deadlines.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: WardenClientConfig
): Effect.Effect<WardenClient, SqlError, Scope.Scope | Reactivity.Reactivity> => makeWith(options)

const makeWith = (
  options: WardenClientConfig,
  adopted?: CoreConfig.Adopted
): Effect.Effect<WardenClient, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function* () {
    const missing = checkDriver()
    if (missing !== "") {
      return yield* Effect.fail(
        sqlError("UnsupportedDriver", `the installed pg lacks what pg-warden relies on (it needs pg ~8.23): ${missing}`)
      )
    }
    const resolved = yield* resolveConfig(options, adopted)
    const config = resolved.client
    const spanAttributes: Array<readonly [string, unknown]> = [
      ...(options.spanAttributes ? Object.entries(options.spanAttributes) : []),
      [ATTR_DB_SYSTEM_NAME, "postgresql"],
      [ATTR_DB_NAMESPACE, config.database ?? config.username ?? "postgres"],
      [ATTR_SERVER_ADDRESS, config.host ?? "localhost"],
      [ATTR_SERVER_PORT, config.port ?? 5432]
    ]
    const compiler = PgClient.makeCompiler(options.transformQueryNames, options.transformJson)
    const transformRows = options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
      : undefined

    const onConnect = yield* connectHook(options.onConnect, { compiler, spanAttributes, transformRows })
    const onLeak = yield* leakWarning(resolved.pool.leakDetectionMs ?? 0)
    let created: Pool | undefined
    const events =
      options.metrics === true
        ? poolMetrics(
            metricSink,
            {
              "db.client.connection.pool.name": resolved.pool.session.applicationName,
              [ATTR_SERVER_ADDRESS]: config.host ?? "localhost",
              [ATTR_SERVER_PORT]: config.port ?? 5432
            },
            resolved.pool,
            () => created
          )
        : undefined
    const hooks = yield* hookRunner(options.hooks, resolved.pool.session.deadlines.terminate)
    const auditLog =
      (resolved.pool.auditIntervalMs ?? 0) > 0
        ? yield* Effect.map(Effect.runtime<never>(), (context) => {
            const fork = Runtime.runFork(context)
            return CoreAudit.auditWarnings((message) => {
              fork(Effect.logWarning(message))
            })
          })
        : undefined
    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => {
        created = new Pool({
          ...resolved.pool,
          onLeak,
          session: {
            ...resolved.pool.session,
            onConnect,
            events: combineEvents(events, hooks, auditLog)
          }
        })
        return created
      }),
      (pool) => Effect.promise(() => pool.close())
    )
    const leakDetection = (resolved.pool.leakDetectionMs ?? 0) > 0

    // Check the server is reachable now, like PgClient.make does, with a typed error if not.
    yield* Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Core.acquire(pool, restore), (session) => Core.release(pool, session))
    )

    const pooled = new PooledConnection(pool, (sql, params, transformRows) =>
      Stream.unwrapScoped(
        Effect.flatMap(reserveSession, (session) => cursorStream(session, sql, params, transformRows))
      )
    )

    /** A session for the current scope; released (with the release protocol) when the scope closes. */
    const reserveSession: Effect.Effect<Session, SqlError, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Core.acquire(pool, restore), (session) =>
        Effect.as(
          Effect.addFinalizer(() => Core.release(pool, session)),
          session
        )
      )
    )

    const reserveFrom = (stack: StackSite | undefined): Effect.Effect<Connection, SqlError, Scope.Scope> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Core.acquire(pool, restore, "reserve", stack), (session) => {
          const connection = new LeasedConnection(session)
          return Effect.as(
            Effect.addFinalizer(() =>
              Effect.suspend(() => {
                connection.active = false
                return Core.release(pool, session)
              })
            ),
            connection
          )
        })
      )
    const reserve = reserveFrom(undefined)

    const base = yield* Client.make({
      acquirer: Effect.succeed(pooled),
      transactionAcquirer: reserve,
      compiler,
      spanAttributes,
      transformRows
    })

    const withTransaction = makeWithTransaction(pool, spanAttributes, leakDetection)
    const hub = new ListenHub(pool)
    const listen = (channel: string): Stream.Stream<string, SqlError> => listenOn(hub, channel)

    const notify = (channel: string, payload: string): Effect.Effect<void, SqlError> =>
      Core.pooledStatement(pool, { text: "SELECT pg_notify($1, $2)", values: [channel, payload] }, () => undefined)

    const poolService: WardenPool.WardenPool = {
      applicationName: resolved.pool.session.applicationName,
      stats: Effect.sync(() => pool.stats()),
      audit: audit(pool)
    }

    const client = Object.assign(base, {
      [PgClient.TypeId]: PgClient.TypeId as PgClient.TypeId,
      config,
      json: (value: unknown) => PgJson(value),
      listen,
      notify,
      withTransaction,
      pool: poolService
    })
    const wrapped = directStatements(client, pooled) as unknown as WardenClient
    // With leak detection on, `sql.reserve` records where it is used (the stack a leak warning shows).
    if (leakDetection) {
      Object.defineProperty(wrapped, "reserve", {
        get: () => reserveFrom(callerStack()),
        enumerable: true,
        configurable: true
      })
    }
    return wrapped
  })

/**
 * The core's metrics on Effect 3's `Metric` module. The attributes travel as one labels array made
 * once per metric: Effect caches a metric's hook per labels array, so an update is a lookup, not a
 * new metric key to hash (about 0.1 µs instead of 6–9 µs with `Metric.tagged`).
 */
const metricSink: MetricSink = {
  counter: (name, description, _unit, attributes) => {
    const metric = Metric.counter(name, { description })
    const labels = labelsOf(attributes)
    return (delta) => metric.unsafeUpdate(delta, labels)
  },
  gauge: (name, description, _unit, attributes) => {
    const metric = Metric.gauge(name, { description })
    const labels = labelsOf(attributes)
    return (value) => metric.unsafeUpdate(value, labels)
  },
  histogram: (name, description, _unit, boundaries, attributes) => {
    const metric = Metric.histogram(name, MetricBoundaries.fromIterable(boundaries), description)
    const labels = labelsOf(attributes)
    return (value) => metric.unsafeUpdate(value, labels)
  }
}

const labelsOf = (attributes: Readonly<Record<string, string | number>>): ReadonlyArray<MetricLabel.MetricLabel> =>
  Object.entries(attributes).map(([key, value]) => MetricLabel.make(key, String(value)))

/**
 * The user's hooks as pool events: each run forked in the Layer's runtime, interrupted after
 * `timeoutMs`, its failure (or timeout) logged as a warning.
 */
const hookRunner = (
  hooks: WardenClientConfig["hooks"],
  timeoutMs: number
): Effect.Effect<ReturnType<typeof CoreOptions.hookEvents>> =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const fork = Runtime.runFork(runtime)
    return CoreOptions.hookEvents(hooks, (name, effect) => {
      fork(
        Effect.suspend(effect).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(timeoutMs),
            onTimeout: () => new Error(`not done within ${timeoutMs} ms (interrupted)`)
          }),
          Effect.catchAllCause((cause) =>
            Effect.logWarning(`pg-warden: the ${name} hook failed; the pool goes on`, cause)
          )
        )
      )
    })
  })

/**
 * The pool's leak report as one warning through Effect's logger (in the Layer's runtime), with the
 * holder's details as log annotations. `undefined` when leak detection is off.
 */
const leakWarning = (thresholdMs: number): Effect.Effect<((holder: HolderReport) => void) | undefined> =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    if (thresholdMs <= 0) return undefined
    const run = Runtime.runFork(runtime)
    return (holder: HolderReport) => {
      run(Effect.logWarning(leakMessage(thresholdMs, holder)).pipe(Effect.annotateLogs(leakAnnotations(holder))))
    }
  })

/**
 * The user's connect hook as the core calls it: an `SqlClient` over the new session, run in the
 * Layer's runtime, interrupted when the connection attempt is abandoned.
 */
const connectHook = (
  hook: WardenClientConfig["onConnect"],
  options: Omit<Client.SqlClient.MakeOptions, "acquirer">
): Effect.Effect<SessionConfig["onConnect"], never, Reactivity.Reactivity> =>
  Effect.gen(function* () {
    if (hook === undefined) return undefined
    const runtime = yield* Effect.runtime<Reactivity.Reactivity>()
    const run = Runtime.runPromiseExit(runtime)
    return (session: Session, signal: AbortSignal) =>
      run(Effect.flatMap(Client.make({ ...options, acquirer: Effect.succeed(new LeasedConnection(session)) }), hook), {
        signal
      }).then((exit) => {
        // The hook's own error (an SqlError with the driver's cause) becomes the connect failure's cause.
        if (Exit.isFailure(exit)) throw Cause.squash(exit.cause)
      })
  })

const makeWithTransaction = (
  pool: Pool,
  spanAttributes: ReadonlyArray<readonly [string, unknown]>,
  leakDetection: boolean
) => {
  const spanOptions = {
    kind: "client",
    captureStackTrace: false,
    attributes: Object.fromEntries(spanAttributes)
  } as const
  /**
   * The span where Effect's built-in tracer would make one (which records it nowhere), made only once a connection is
   * held: `Effect.currentSpan` inside the transaction must see it, and a fiber interrupted while waiting pays nothing.
   * A `QuietSpan` (internal/span.ts), ended where the transaction ends, rather than the tracer's own span ended
   * through `Effect.onExit`: that pair cost about 10 % of the CPU of a transaction.
   */
  const quietSpan = (fiber: Fiber.RuntimeFiber<unknown, unknown>, clock: Clock.Clock): Tracer.Span =>
    new QuietSpan(
      "sql.transaction",
      Context.getOption(fiber.currentContext, Tracer.ParentSpan),
      Context.empty(),
      clock.unsafeCurrentTimeNanos(),
      "client",
      spanAttributes
    )
  // As @effect/sql makes it: one `sql.transaction` span per call, the parent of what runs inside,
  // with an event for how it ended. Under a recording tracer it is @effect/sql's own `useSpan`.
  const transaction = <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>,
    fiber: Fiber.RuntimeFiber<unknown, unknown>,
    made: Tracer.Span | undefined,
    stack: StackSite | undefined
  ): Effect.Effect<A, E | SqlError, R> => {
    const context = fiber.currentContext
    const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
    let span = made
    const open = (): Tracer.Span => {
      span ??= quietSpan(fiber, clock)
      return span
    }
    const mark = (event: string) => open().event(event, clock.unsafeCurrentTimeNanos())
    /** Ends the quiet span; a recording tracer's span is ended by `useSpan`. */
    const finish = (exit: Exit.Exit<unknown, unknown>) => {
      if (made === undefined) span?.end(clock.unsafeCurrentTimeNanos(), exit)
    }
    const inTransaction = (connection: Connection, depth: number) =>
      Effect.locally(
        restore(effect),
        FiberRef.currentContext,
        Context.add(context, Client.TransactionConnection, [connection, depth] as const).pipe(
          Context.add(Tracer.ParentSpan, open())
        )
      )
    const outer = Context.getOption(context, Client.TransactionConnection)
    if (Option.isSome(outer)) {
      const [connection, depth] = outer.value
      const name = `warden_sp_${depth + 1}`
      return connection.executeUnprepared(`SAVEPOINT ${name}`, [], undefined).pipe(
        Effect.onError((cause) => Effect.sync(() => finish(Exit.failCause(cause)))),
        Effect.zipRight(Effect.exit(inTransaction(connection, depth + 1))),
        Effect.flatMap((exit): Effect.Effect<A, E | SqlError, R> => {
          if (Exit.isSuccess(exit)) {
            mark("db.transaction.savepoint")
            finish(exit)
            return exit
          }
          mark("db.transaction.rollback")
          finish(exit)
          return Effect.zipRight(rollbackToSavepoint(connection, name), exit)
        })
      )
    }
    return Effect.flatMap(Core.acquire(pool, restore, "transaction", stack), (session) => {
      const connection = new LeasedConnection(session)
      // BEGIN travels with the transaction's first statement, saving a round trip.
      session.beginPending = true
      const end = Effect.suspend(() => {
        connection.active = false
        return Core.release(pool, session)
      })
      return Effect.matchCauseEffect(inTransaction(connection, 0), {
        onFailure: (cause) => {
          mark("db.transaction.rollback")
          finish(Exit.failCause(cause))
          return Effect.zipRight(end, Effect.failCause(cause))
        },
        onSuccess: (value) => {
          mark("db.transaction.commit")
          return Effect.matchCauseEffect(restore(commit(session)), {
            onFailure: (cause) => {
              finish(Exit.failCause(cause))
              return Effect.zipRight(end, Effect.failCause(cause))
            },
            onSuccess: () => {
              finish(Exit.succeed(value))
              return Effect.as(end, value)
            }
          })
        }
      })
    })
  }
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> => {
    // Called in the user's code, so this stack shows where the transaction was asked for.
    const stack = leakDetection ? callerStack() : undefined
    return Effect.uninterruptibleMask((restore) =>
      Effect.withFiberRuntime<A, E | SqlError, R>((fiber) =>
        spansObservable(fiber)
          ? Effect.useSpan("sql.transaction", spanOptions, (span) =>
              Effect.withFiberRuntime<A, E | SqlError, R>((inner) => transaction(effect, restore, inner, span, stack))
            )
          : transaction(effect, restore, fiber, undefined, stack)
      )
    )
  }
}

/** COMMIT; a failure or a COMMIT the server turned into ROLLBACK is a typed `SqlError`. */
const commit = (session: Session): Effect.Effect<void, SqlError> =>
  Effect.suspend(() => {
    if (session.beginPending) {
      // No statement ran, so the transaction never started: nothing to commit.
      session.beginPending = false
      return Effect.void
    }
    return sendCommit(session)
  })

const sendCommit = (session: Session): Effect.Effect<void, SqlError> =>
  Core.run(session, { text: "COMMIT" }, (result: Pg.QueryResult) => result.command).pipe(
    Effect.mapError((error) => sqlError("CommitFailed", `COMMIT failed: ${error.message}`, { cause: error.cause })),
    Effect.flatMap((command) =>
      command === "ROLLBACK"
        ? Effect.fail(
            sqlError(
              "CommitRolledBack",
              "the server rolled the transaction back instead of committing it (a statement in it had failed)"
            )
          )
        : Effect.void
    )
  )

/**
 * Rolls back to a savepoint after the inner block failed. If that cannot be done, the whole
 * session is terminated so the outer transaction can never commit half of the inner work.
 */
const rollbackToSavepoint = (connection: Connection, name: string): Effect.Effect<void> => {
  const session = (connection as LeasedConnection).session
  return connection.executeUnprepared(`ROLLBACK TO SAVEPOINT ${name}`, [], undefined).pipe(
    Effect.timeout(Duration.millis(session.config.deadlines.rollback)),
    Effect.interruptible,
    Effect.catchAllCause(() => Effect.promise(() => session.terminate()))
  )
}

/** The audit (C7) as an Effect; interrupting it abandons the control connection. */
const audit = (pool: Pool): Effect.Effect<WardenPool.AuditReport, SqlError> =>
  Effect.async<WardenPool.AuditReport, SqlError>((resume) => {
    const abandon = CoreAudit.audit(pool, (error, report) =>
      resume(error === undefined ? Effect.succeed(report!) : Effect.fail(Core.toSqlError(error)))
    )
    return Effect.sync(abandon)
  })

const toContext = (client: WardenClient) =>
  Context.make(PgClient.PgClient, client as PgClient.PgClient).pipe(
    Context.add(Client.SqlClient, client as Client.SqlClient),
    Context.add(WardenPool.WardenPool, client.pool)
  )

/**
 * The drop-in Layer: provides `SqlClient`, `PgClient` and `WardenPool`. Closing the Layer
 * closes the pool within the cleanup deadlines.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: WardenClientConfig
): Layer.Layer<PgClient.PgClient | Client.SqlClient | WardenPool.WardenPool, SqlError> =>
  Layer.scopedContext(Effect.map(make(config), toContext)).pipe(Layer.provide(Reactivity.layer))

/**
 * What {@link fromPool} takes: how to get the `pg.Pool` whose connection settings pg-warden
 * adopts, and any of pg-warden's options but the connection fields (they come from the pool).
 *
 * @since 0.1.0
 * @category models
 */
export interface WardenClientFromPoolOptions
  extends Omit<WardenClientConfig, "url" | "host" | "port" | "database" | "username" | "password" | "ssl" | "stream"> {
  /** The pool, as `@effect/sql-pg`'s `fromPool` takes it; its lifetime stays the caller's. */
  readonly acquire: Effect.Effect<Pg.Pool, SqlError, Scope.Scope>
}

/**
 * A client whose connections are made with the settings of a `pg.Pool` the caller owns, as
 * `@effect/sql-pg`'s `fromPool` (for example a pool whose `password` is a function that fetches
 * an IAM token: it is evaluated for every new connection). pg-warden opens its own sessions from
 * `pool.options` and never takes connections from the caller's pool, so every guarantee holds;
 * `maxConnections` and the other pool options are pg-warden's (the `pg.Pool`'s `max` is ignored).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromPool = (
  options: WardenClientFromPoolOptions
): Effect.Effect<WardenClient, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.flatMap(options.acquire, (pgPool) => {
    const adopted = pgPool.options as Pg.PoolConfig & CoreConfig.Adopted
    return makeWith(
      {
        ...options,
        ...(options.types === undefined && adopted.types !== undefined ? { types: adopted.types as any } : {})
      },
      adopted
    )
  })

/**
 * {@link fromPool} as a Layer providing `SqlClient`, `PgClient` and `WardenPool`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromPool = (
  options: WardenClientFromPoolOptions
): Layer.Layer<PgClient.PgClient | Client.SqlClient | WardenPool.WardenPool, SqlError> =>
  Layer.scopedContext(Effect.map(fromPool(options), toContext)).pipe(Layer.provide(Reactivity.layer))

/**
 * Like {@link layer}, reading the configuration from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<WardenClientConfig>
): Layer.Layer<PgClient.PgClient | Client.SqlClient | WardenPool.WardenPool, ConfigError.ConfigError | SqlError> =>
  Layer.scopedContext(Config.unwrap(config).pipe(Effect.flatMap(make), Effect.map(toContext))).pipe(
    Layer.provide(Reactivity.layer)
  )
