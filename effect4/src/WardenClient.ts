/**
 * A drop-in replacement for `@effect/sql-pg` 4's `PgClient.layer` whose connections never outlive
 * their scope: interruption always ends in a verified-clean session or a terminated backend, within
 * a bound derived from the configuration. The pool, sessions and release protocol are pg-warden's
 * Effect-free core, shared with the Effect 3 edition.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as PgConnection from "@effect/sql-pg/PgConnection"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Client from "effect/sql/SqlClient"
import type { Connection } from "effect/sql/SqlConnection"
import { SqlError, UnknownError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import type * as Pg from "pg"
import Cursor from "pg-cursor"
import * as CoreAudit from "../../src/core/audit.js"
import * as CoreConfig from "../../src/core/config.js"
import { checkDriver } from "../../src/core/driver.js"
import { CoreError, type HolderReport, leakAnnotations, leakMessage } from "../../src/core/errors.js"
import { combineEvents } from "../../src/core/events.js"
import { ListenHub } from "../../src/core/listen.js"
import { type MetricSink, poolMetrics } from "../../src/core/metrics.js"
import * as CoreOptions from "../../src/core/options.js"
import { Pool } from "../../src/core/pool.js"
import type { Session, SessionConfig, StatementConfig } from "../../src/core/session.js"
import { callerStack } from "../../src/core/stack.js"
import * as Core from "./internal/core.js"
import { encodeParams, types } from "./internal/values.js"
import * as WardenPool from "./WardenPool.js"

/**
 * Server-side safety settings sent in every session's startup packet. `false` sends none, for
 * proxies that refuse startup options. Fields: `idleInTransactionSessionTimeout` (default 60 s),
 * `clientConnectionCheckInterval` (default 1 s), `tcpKeepalives` (default idle 30 s, interval 10 s,
 * count 3); `null` leaves the server's value.
 *
 * @since 0.1.0
 * @category models
 */
export type ServerSafety = CoreOptions.ServerSafetyOptions<Duration.Input>

/**
 * The configuration: every field of `@effect/sql-pg` 4's `PgPoolConfig`, plus pg-warden's acquire
 * timeout, cleanup deadlines and session options. Fields pg-warden cannot honour fail with an
 * `InvalidConfig` cause instead of being ignored: `multiplex: true` (its statements cannot be
 * cancelled), `types` (a `PgTypes.Registry` of binary codecs; pg-warden's driver reads text),
 * and `maxMessageSize`. (`keepAlive`, the idle time before TCP keepalive probes, is taken as `keepAliveDelay`.)
 *
 * @since 0.1.0
 * @category models
 */
export interface WardenClientConfig extends PgClient.PgPoolConfig, CoreOptions.WardenOptions<Duration.Input> {
  /**
   * Runs on every new connection before its first use, with an `SqlClient` whose statements run on
   * that connection. Bounded by `connectTimeout`; the settings and role it leaves are the session's
   * baseline, which every reset restores.
   */
  readonly onConnect?: ((sql: Client.SqlClient) => Effect.Effect<unknown, SqlError>) | undefined
  /**
   * Effects run when the pool opens a connection, grants a lease, ends one (with the release
   * protocol's outcome) and terminates a backend: for logging and counting. Each runs in a fiber of
   * its own with the Layer's services, so it never delays the pool; it is interrupted after
   * `terminateTimeout`, and its failure is logged, never propagated.
   */
  readonly hooks?: CoreOptions.WardenHooks<Effect.Effect<unknown, unknown>> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface WardenClient extends PgClient.PgClient {
  readonly pool: WardenPool.WardenPool
}

/**
 * The defaults, in milliseconds where they are durations.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults: typeof CoreConfig.defaults = CoreConfig.defaults

const ms = (input: Duration.Input | undefined): number | undefined =>
  input === undefined ? undefined : Duration.toMillis(Duration.fromInputUnsafe(input))

const invalid = (detail: string) => new CoreError("InvalidConfig", detail)

/** The fields of sql-pg 4's configuration that pg-warden does not take, with why. */
const refusals = (config: WardenClientConfig): Array<string> => [
  ...(config.multiplex === true
    ? ["multiplex: true is not supported: a multiplexed connection's statements cannot be cancelled one by one"]
    : []),
  ...(config.types !== undefined
    ? ["types (a PgTypes.Registry of binary codecs) is not supported: pg-warden's driver reads results as text"]
    : []),
  ...(config.keepAlive !== undefined &&
  config.keepAliveDelay !== undefined &&
  Duration.toMillis(Duration.fromInputUnsafe(config.keepAlive)) !==
    Duration.toMillis(Duration.fromInputUnsafe(config.keepAliveDelay))
    ? ["keepAlive and keepAliveDelay are the same setting (the TCP keepalive's first probe) and differ"]
    : []),
  ...(config.maxMessageSize !== undefined ? ["maxMessageSize is not supported by pg-warden's driver"] : [])
]

/** A Unix socket path (`/run/postgresql/.s.PGSQL.5432`) as pg's host folder and port. */
const socketOf = (path: string): { readonly host: string; readonly port: number | undefined } => {
  const match = /^(.*)\/\.s\.PGSQL\.(\d+)$/.exec(path)
  return match ? { host: match[1]!, port: Number(match[2]) } : { host: path, port: undefined }
}

/** An `Effect<Redacted>` password as pg's password function, evaluated for every connection. */
const passwordOf = (password: WardenClientConfig["password"]): Pg.ClientConfig["password"] => {
  if (password === undefined) return undefined
  if (Redacted.isRedacted(password)) return Redacted.value(password) as string
  return () => Effect.runPromise(Effect.map(password, (value) => Redacted.value(value) as string))
}

/** pg-warden's options as the core takes them: durations in milliseconds, pg's value types. */
const coreInput = (config: WardenClientConfig): CoreConfig.ConfigInput => {
  const refused = refusals(config)
  if (refused.length > 0) throw invalid(refused.join("; "))
  const socket = config.path !== undefined ? socketOf(config.path) : undefined
  return {
    url: config.url ? Redacted.value(config.url) : undefined,
    host: socket?.host ?? config.host,
    port: socket?.port ?? config.port,
    database: config.database,
    user: config.username,
    password: passwordOf(config.password),
    ssl: config.ssl as Pg.ClientConfig["ssl"],
    types,
    stream: config.stream as Pg.ClientConfig["stream"],
    maxConnections: config.maxConnections,
    minConnections: config.minConnections,
    connectTimeout: ms(config.connectTimeout),
    idleTimeout: ms(config.idleTimeout),
    connectionTTL: ms(config.connectionTTL),
    applicationName: config.applicationName ?? config.startupParameters?.application_name,
    // An explicit `prepare: true` counts as asking for the cache (refused through PgBouncer, never ignored).
    statementCacheSize:
      config.prepare === false
        ? 0
        : (config.preparedStatementCacheSize ??
          (config.prepare === true ? CoreConfig.defaults.statementCacheSize : undefined)),
    startupParameters: config.startupParameters,
    startupOptions: config.startupOptions,
    ...CoreOptions.wardenInput(
      // sql-pg 4's `keepAlive` is the idle time before TCP keepalive probes start: pg-warden's keepAliveDelay.
      { ...config, keepAliveDelay: config.keepAliveDelay ?? config.keepAlive },
      (input) => Duration.toMillis(Duration.fromInputUnsafe(input))
    )
  }
}

/**
 * The upper bound on how long releasing one interrupted connection can take: the sum of the
 * cleanup deadlines. Interrupting a fiber that holds a connection completes within it.
 *
 * @since 0.1.0
 * @category utils
 */
export const cleanupBound = (config: WardenClientConfig): Duration.Duration =>
  Duration.millis(CoreConfig.cleanupBoundMs(coreInput(config)))

const configError = (error: unknown): SqlError =>
  error instanceof CoreError
    ? Core.toSqlError(error)
    : new SqlError({
        reason: new UnknownError({
          cause: error,
          message: `invalid configuration: ${String(error)}`,
          operation: "configure"
        })
      })

type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

const rowsOf = (result: any): ReadonlyArray<any> =>
  Array.isArray(result) ? result.map((r: Pg.QueryResult) => r.rows ?? []) : (result.rows ?? [])
const asRows = (transformRows: TransformRows): ((result: any) => ReadonlyArray<any>) =>
  transformRows ? (result) => transformRows(rowsOf(result)) : rowsOf
/** `executeRaw`'s result, shaped as sql-pg 4's `PgConnection.Result`. */
const asResult = (result: any) => {
  const last: Pg.QueryResult = Array.isArray(result) ? result[result.length - 1] : result
  return {
    command: last.command,
    rowCount: last.rowCount ?? 0,
    oid: last.oid,
    rows: last.rows ?? [],
    fields: (last.fields ?? []).map((f) => ({ name: f.name, dataTypeId: f.dataTypeID }))
  }
}
const asArrayRows = (result: any): ReadonlyArray<ReadonlyArray<unknown>> => (result as Pg.QueryArrayResult).rows

/** A statement for the core: its parameters as pg sends them, typed as sql-pg 4 types them. */
const statement = (text: string, params: ReadonlyArray<unknown>, rowMode?: "array"): StatementConfig => {
  const { values, types } = encodeParams(params)
  const config: Pg.QueryConfig = types === undefined ? { text, values } : { text, values, types }
  return rowMode === undefined ? config : { ...config, rowMode }
}

/** The `Connection` of effect/sql over one way to run a statement, and a cursor stream. */
abstract class StatementConnection implements Connection {
  protected abstract run<A>(config: StatementConfig, onResult: (result: any) => A): Effect.Effect<A, SqlError>

  abstract executeStream(
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: TransformRows
  ): Stream.Stream<any, SqlError>

  execute(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.run(statement(sql, params), asRows(transformRows))
  }

  executeRaw(sql: string, params: ReadonlyArray<unknown>) {
    return this.run(statement(sql, params), asResult)
  }

  executeValues(sql: string, params: ReadonlyArray<unknown>) {
    return this.run(statement(sql, params, "array"), asArrayRows)
  }

  executeValuesUnprepared(sql: string, params: ReadonlyArray<unknown>) {
    return this.executeValues(sql, params)
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

const usedAfterScope = () =>
  new SqlError({
    reason: new UnknownError({
      cause: new Error("Connection used after its scope was closed"),
      message: "Connection used after its scope was closed",
      operation: "execute"
    })
  })

/** A session held for a scope (reserve, transaction). Using it after its scope closed fails. */
class LeasedConnection extends StatementConnection {
  active = true

  constructor(readonly session: Session) {
    super()
  }

  protected run<A>(config: StatementConfig, onResult: (result: any) => A): Effect.Effect<A, SqlError> {
    return this.active ? Core.run(this.session, config, onResult) : Effect.fail(usedAfterScope())
  }

  executeStream(sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) {
    return this.active
      ? Stream.unwrap(cursorStream(this.session, sql, params, transformRows))
      : Stream.fail(usedAfterScope())
  }
}

const CURSOR_BATCH = 128

/**
 * Streams rows with a server-side cursor. Closing the stream (end, failure, interruption) closes the
 * cursor within the drain deadline; a cursor that does not close in time leaves the statement in
 * flight, which the release protocol cancels or terminates.
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
    const encoded = encodeParams(params)
    // pg-cursor sends no parameter types in its Parse: a stream's parameters stay untyped.
    const cursor = new Cursor(sql, encoded.values, { types })
    const tracked = session.sendTracked(cursor)
    let finished = false
    yield* Effect.addFinalizer(() =>
      finished
        ? Effect.void
        : Effect.callback<void>((resume) => {
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
    const pull = Effect.callback<readonly [any, ...Array<any>], SqlError | Cause.Done>((resume) => {
      cursor.read(CURSOR_BATCH, (error: Error | undefined, rows: Array<any>) => {
        if (error) {
          finished = true
          tracked.done(error)
          resume(Effect.fail(Core.statementError(error)))
        } else if (rows.length > 0) {
          const out = transformRows ? transformRows(rows) : rows
          resume(Effect.succeed(out as unknown as readonly [any, ...Array<any>]))
        } else {
          finished = true
          cursor.close(() => tracked.done())
          resume(Cause.done())
        }
      })
    })
    return Stream.fromPull(Effect.succeed(pull))
  })

/** COMMIT; a failure or a COMMIT the server turned into ROLLBACK is a typed `SqlError`. */
const commit = (session: Session): Effect.Effect<void, SqlError> =>
  Effect.suspend(() => {
    if (session.beginPending) {
      // No statement ran, so the transaction never started: nothing to commit.
      session.beginPending = false
      return Effect.void
    }
    return Core.run(session, { text: "COMMIT" }, (result: Pg.QueryResult) => result.command).pipe(
      Effect.mapError((error) =>
        Core.toSqlError(new CoreError("CommitFailed", `COMMIT failed: ${error.message}`, error.reason.cause))
      ),
      Effect.flatMap((command) =>
        command === "ROLLBACK"
          ? Effect.fail(
              Core.toSqlError(
                new CoreError(
                  "CommitRolledBack",
                  "the server rolled the transaction back instead of committing it (a statement in it had failed)"
                )
              )
            )
          : Effect.void
      )
    )
  })

/**
 * Rolls back to a savepoint after the inner block failed. If that cannot be done, the whole session
 * is terminated so the outer transaction can never commit half of the inner work.
 */
const rollbackToSavepoint = (connection: LeasedConnection, name: string): Effect.Effect<void> =>
  connection.executeUnprepared(`ROLLBACK TO SAVEPOINT ${name}`, [], undefined).pipe(
    Effect.timeout(Duration.millis(connection.session.config.deadlines.rollback)),
    Effect.interruptible,
    Effect.catchCause(() => Effect.promise(() => connection.session.terminate()))
  )

let transactionServices = 0

/**
 * The user's connect hook as the core calls it: an `SqlClient` over the new session, run with the
 * Layer's services, interrupted when the connection attempt is abandoned.
 */
const connectHook = (
  hook: WardenClientConfig["onConnect"],
  options: Omit<Client.SqlClient.MakeOptions, "acquirer">
): Effect.Effect<SessionConfig["onConnect"], never, Reactivity.Reactivity> =>
  Effect.gen(function* () {
    if (hook === undefined) return undefined
    const services = yield* Effect.context<Reactivity.Reactivity>()
    const run = Effect.runPromiseExitWith(services)
    return (session: Session, signal: AbortSignal) =>
      run(Effect.flatMap(Client.make({ ...options, acquirer: Effect.succeed(new LeasedConnection(session)) }), hook), {
        signal
      }).then((exit) => {
        if (Exit.isFailure(exit)) throw Cause.squash(exit.cause)
      })
  })

/** The audit (C7) as an Effect; interrupting it abandons the control connection. */
const audit = (pool: Pool): Effect.Effect<WardenPool.AuditReport, SqlError> =>
  Effect.callback<WardenPool.AuditReport, SqlError>((resume) => {
    const abandon = CoreAudit.audit(pool, (error, report) =>
      resume(error === undefined ? Effect.succeed(report!) : Effect.fail(Core.toSqlError(error)))
    )
    return Effect.sync(abandon)
  })

/** sql-pg 4's limit: a channel name is an identifier of at most 63 bytes. */
const channelError = (channel: string, operation: "listen" | "notify"): SqlError | undefined =>
  Buffer.byteLength(channel, "utf8") > 63
    ? new SqlError({
        reason: new UnknownError({
          cause: new Error(`channel name longer than 63 bytes: ${channel}`),
          message: `PgClient: channel name longer than 63 bytes`,
          operation
        })
      })
    : undefined

const ATTR_DB_SYSTEM_NAME = "db.system.name"
const ATTR_DB_NAMESPACE = "db.namespace"
const ATTR_SERVER_ADDRESS = "server.address"
const ATTR_SERVER_PORT = "server.port"

interface PgJson extends Statement.Custom<"PgJson", unknown> {}
const PgJson = Statement.custom<PgJson>("PgJson")
const escapeIdentifier = Statement.defaultEscape('"')

/**
 * sql-pg 4's statement compiler, with one change for `pg`: `sql.json(value)` becomes a `jsonb`
 * parameter by a cast (`$1::jsonb`), since pg sends every parameter untyped, so the server sees the
 * type sql-pg 4 sends in its Bind message.
 */
const makeCompiler = (transform?: (_: string) => string, transformJson = true): Statement.Compiler => {
  const transformValue = transformJson && transform ? Statement.defaultTransforms(transform).value : undefined
  return Statement.makeCompiler<PgJson>({
    dialect: "pg",
    placeholder: (index) => `$${index}`,
    onIdentifier: transform
      ? (value, withoutTransform) => (withoutTransform ? escapeIdentifier(value) : escapeIdentifier(transform(value)))
      : escapeIdentifier,
    onRecordUpdate: (placeholders, valueAlias, valueColumns, values, returning) => [
      `(values ${placeholders}) AS ${valueAlias}${valueColumns}${returning ? ` RETURNING ${returning[0]}` : ""}`,
      returning ? values.flat().concat(returning[1]) : values.flat()
    ],
    onCustom: (type, placeholder, withoutTransform) => {
      const value = withoutTransform || transformValue === undefined ? type.paramA : transformValue(type.paramA)
      return [`${placeholder(undefined)}::jsonb`, [JSON.stringify(value)]]
    }
  })
}

/**
 * Makes a client over a new pool; the pool closes with the scope: leased connections are released
 * through the release protocol, within the cleanup deadlines. Like `PgClient.make`, it does not
 * connect until the first statement.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: WardenClientConfig
): Effect.Effect<WardenClient, SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function* () {
    const missing = checkDriver()
    if (missing !== "") {
      return yield* Effect.fail(
        Core.toSqlError(
          new CoreError(
            "UnsupportedDriver",
            `the installed pg lacks what pg-warden relies on (it needs pg ~8.23): ${missing}`
          )
        )
      )
    }
    const resolved = yield* Effect.try({
      try: () => CoreConfig.resolveConfig(coreInput(options)),
      catch: configError
    })
    const target = resolved.target
    const config: PgClient.PgClientConfig = {
      ...options,
      applicationName: target.applicationName,
      host: target.host,
      port: target.port,
      username: target.user,
      database: target.database,
      password: options.password ?? (target.password !== undefined ? Redacted.make(target.password) : undefined)
    }
    const spanAttributes: Array<readonly [string, unknown]> = [
      ...(options.spanAttributes ? Object.entries(options.spanAttributes) : []),
      [ATTR_DB_SYSTEM_NAME, "postgresql"],
      [ATTR_DB_NAMESPACE, config.database ?? config.username ?? "postgres"],
      [ATTR_SERVER_ADDRESS, config.host ?? "localhost"],
      [ATTR_SERVER_PORT, config.port ?? 5432]
    ]
    const compiler = makeCompiler(options.transformQueryNames, options.transformJson)
    const transformRows = options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
      : undefined
    const transactionService = Context.Service<Client.TransactionConnection, Client.TransactionConnection.Service>(
      `pg-warden/TransactionConnection/${transactionServices++}`
    )

    const onConnect = yield* connectHook(options.onConnect, {
      compiler,
      spanAttributes,
      transformRows,
      driver: "pg"
    })
    const onLeak = yield* leakWarning(resolved.pool.leakDetectionMs ?? 0)
    let created: Pool | undefined
    const events =
      options.metrics === true
        ? poolMetrics(
            metricSink(yield* Effect.context<never>()),
            {
              "db.client.connection.pool.name": resolved.pool.session.applicationName,
              "server.address": resolved.target.host ?? "localhost",
              "server.port": resolved.target.port ?? 5432
            },
            resolved.pool,
            () => created
          )
        : undefined
    const hooks = yield* hookRunner(options.hooks, resolved.pool.session.deadlines.terminate)
    const auditLog =
      (resolved.pool.auditIntervalMs ?? 0) > 0
        ? yield* Effect.map(Effect.context<never>(), (context) => {
            const fork = Effect.runForkWith(context)
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

    /** A session for the current scope; released (with the release protocol) when the scope closes. */
    const leased = (
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
      kind: "reserve" | "transaction" = "reserve"
    ): Effect.Effect<LeasedConnection, SqlError, Scope.Scope> =>
      Effect.flatMap(Core.acquire(pool, restore, kind), (session) => {
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

    const pooled = new PooledConnection(pool, (sql, params, transformRows) =>
      Stream.unwrap(
        Effect.flatMap(
          Effect.uninterruptibleMask((restore) => leased(restore)),
          (connection) => cursorStream(connection.session, sql, params, transformRows)
        )
      )
    )
    const reserve: Effect.Effect<Connection, SqlError, Scope.Scope> = Effect.uninterruptibleMask((restore) =>
      leased(restore)
    )

    const base = yield* Client.make({
      acquirer: Effect.succeed(pooled),
      borrower: (f) => f(pooled),
      transactionAcquirer: reserve,
      transactionService,
      compiler,
      spanAttributes,
      transformRows,
      driver: "pg"
    })

    // effect/sql's transaction machinery (afterCommit, deferred Reactivity invalidation, the
    // `sql.transaction` span) with pg-warden's steps: BEGIN travels with the first statement, COMMIT
    // stays interruptible and typed, and a failed transaction is rolled back by the release protocol
    // (bounded, terminate when it cannot), never by an unbounded ROLLBACK that could end in a defect.
    const withTransaction = Client.makeWithTransaction<Client.TransactionConnection, LeasedConnection>({
      transactionService: transactionService as unknown as Context.Key<
        Client.TransactionConnection,
        readonly [LeasedConnection, number]
      >,
      spanAttributes,
      acquireConnection: (restore) => leased(restore, "transaction"),
      begin: (connection, statement) => {
        if (statement !== undefined) return Effect.asVoid(connection.executeUnprepared(statement, [], undefined))
        connection.session.beginPending = true
        return Effect.void
      },
      savepoint: (connection, id) =>
        Effect.asVoid(connection.executeUnprepared(`SAVEPOINT effect_sql_${id}`, [], undefined)),
      releaseSavepoint: (connection, id) =>
        Effect.ignore(connection.executeUnprepared(`RELEASE SAVEPOINT effect_sql_${id}`, [], undefined)),
      commit: (connection) => Effect.interruptible(commit(connection.session)),
      rollback: () => Effect.void,
      rollbackSavepoint: (connection, id) => rollbackToSavepoint(connection, `effect_sql_${id}`)
    })

    const hub = new ListenHub(pool)
    const listen = (
      channel: string
    ): Effect.Effect<Queue.Dequeue<PgConnection.Notification, SqlError>, SqlError, Scope.Scope> =>
      Effect.gen(function* () {
        const invalidName = channelError(channel, "listen")
        if (invalidName !== undefined) return yield* Effect.fail(invalidName)
        const queue = yield* Queue.unbounded<PgConnection.Notification, SqlError>()
        yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: () =>
              hub.subscribe(
                channel,
                (notification) => Queue.offerUnsafe(queue, notification),
                (error) => Queue.failCauseUnsafe(queue, Cause.fail(Core.toSqlError(error)))
              ),
            catch: (error) => (error instanceof CoreError ? Core.toSqlError(error) : Core.statementError(error))
          }),
          (unsubscribe) => Effect.andThen(Effect.promise(unsubscribe), Queue.shutdown(queue))
        )
        return queue
      })

    const notify = (channel: string, payload: string): Effect.Effect<void, SqlError> => {
      const invalidName = channelError(channel, "notify")
      return invalidName !== undefined
        ? Effect.fail(invalidName)
        : Core.pooledStatement(pool, { text: "SELECT pg_notify($1, $2)", values: [channel, payload] }, () => undefined)
    }

    const poolService: WardenPool.WardenPool = {
      applicationName: resolved.pool.session.applicationName,
      stats: Effect.sync(() => pool.stats()),
      audit: audit(pool)
    }

    const client = Object.assign(base, {
      [PgClient.TypeId]: PgClient.TypeId as PgClient.TypeId,
      config,
      json: (value: unknown) => Statement.fragment([PgJson(value)]),
      listen,
      notify,
      // With leak detection on, a transaction records where it was asked for (called in the user's code).
      withTransaction: leakDetection
        ? <A, E, R>(effect: Effect.Effect<A, E, R>) =>
            Effect.provideService(withTransaction(effect), Core.AcquiredAt, callerStack())
        : withTransaction,
      pool: poolService
    }) as WardenClient
    // …and `sql.reserve` where it is used.
    if (leakDetection) {
      Object.defineProperty(client, "reserve", {
        get: () => Effect.provideService(reserve, Core.AcquiredAt, callerStack()),
        enumerable: true,
        configurable: true
      })
    }
    return client
  })

/** The core's metrics on effect 4's `Metric` module, updated in the Layer's services (its metric registry). */
const metricSink = (services: Context.Context<never>): MetricSink => ({
  counter: (name, description, _unit, attributes) => {
    const metric = Metric.counter(name, { description, attributes: stringAttributes(attributes) })
    return (delta) => metric.updateUnsafe(delta, services)
  },
  gauge: (name, description, _unit, attributes) => {
    const metric = Metric.gauge(name, { description, attributes: stringAttributes(attributes) })
    return (value) => metric.updateUnsafe(value, services)
  },
  histogram: (name, description, _unit, boundaries, attributes) => {
    const metric = Metric.histogram(name, { description, boundaries, attributes: stringAttributes(attributes) })
    return (value) => metric.updateUnsafe(value, services)
  }
})

const stringAttributes = (attributes: Readonly<Record<string, string | number>>): Record<string, string> =>
  Object.fromEntries(Object.entries(attributes).map(([key, value]) => [key, String(value)]))

/**
 * The user's hooks as pool events: each run forked with the Layer's services, interrupted after
 * `timeoutMs`, its failure (or timeout) logged as a warning.
 */
const hookRunner = (
  hooks: WardenClientConfig["hooks"],
  timeoutMs: number
): Effect.Effect<ReturnType<typeof CoreOptions.hookEvents>> =>
  Effect.map(Effect.context<never>(), (services) => {
    const fork = Effect.runForkWith(services)
    return CoreOptions.hookEvents(hooks, (name, effect) => {
      fork(
        Effect.suspend(effect).pipe(
          Effect.timeoutOrElse({
            duration: Duration.millis(timeoutMs),
            orElse: () => Effect.fail(new Error(`not done within ${timeoutMs} ms (interrupted)`))
          }),
          Effect.catchCause((cause) => Effect.logWarning(`pg-warden: the ${name} hook failed; the pool goes on`, cause))
        )
      )
    })
  })

/**
 * The pool's leak report as one warning through Effect's logger (with the Layer's services), the
 * holder's details as log annotations. `undefined` when leak detection is off.
 */
const leakWarning = (thresholdMs: number): Effect.Effect<((holder: HolderReport) => void) | undefined> =>
  Effect.map(Effect.context<never>(), (services) => {
    if (thresholdMs <= 0) return undefined
    const run = Effect.runForkWith(services)
    return (holder: HolderReport) => {
      run(Effect.logWarning(leakMessage(thresholdMs, holder)).pipe(Effect.annotateLogs(leakAnnotations(holder))))
    }
  })

const toContext = (client: WardenClient) =>
  Context.make(PgClient.PgClient, client as PgClient.PgClient).pipe(
    Context.add(Client.SqlClient, client as Client.SqlClient),
    Context.add(WardenPool.WardenPool, client.pool)
  )

/**
 * The drop-in Layer: provides `SqlClient`, `PgClient` and `WardenPool`. Closing the Layer closes the
 * pool within the cleanup deadlines.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: WardenClientConfig
): Layer.Layer<PgClient.PgClient | Client.SqlClient | WardenPool.WardenPool, SqlError> =>
  Layer.effectContext(Effect.map(make(config), toContext)).pipe(Layer.provide(Reactivity.layer))

/**
 * Like {@link layer}, reading the configuration from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<WardenClientConfig>
): Layer.Layer<PgClient.PgClient | Client.SqlClient | WardenPool.WardenPool, Config.ConfigError | SqlError> =>
  Layer.effectContext(Effect.flatMap(Config.unwrap(config), make).pipe(Effect.map(toContext))).pipe(
    Layer.provide(Reactivity.layer)
  )
