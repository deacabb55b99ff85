/**
 * `pg-warden check`: a bounded, non-destructive conformance run against the user's own database
 * path (server, proxies, network). It opens its own sessions under a unique `application_name`,
 * creates one temporary table (dropped afterwards, and gone with its session anyway), and checks:
 * that a protocol CancelRequest reaches the backend, that interruption mid-statement and
 * mid-transaction ends promptly and cleanly on the server, that a short interruption storm hurts no
 * one who was not interrupted, and the server settings that matter. Each line passes, warns or fails;
 * any failure makes the command exit with 1.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as Pg from "pg"
import * as ServerObserver from "pg-warden/Observer"
import * as WardenClient from "pg-warden/WardenClient"
import * as WardenError from "pg-warden/WardenError"
import * as WardenPool from "pg-warden/WardenPool"
import * as Interruptions from "./interruptions.js"
import { storm } from "./interruptions-effect3.js"
import { colorFor, formatMs, type Paint, pad, painter, percentile, plural } from "./report.js"
import { type Deadlines, interruptMeasured, makeStats, probe, runBody, type ScenarioContext } from "./scenarios.js"
import {
  CliError,
  connectError,
  countStates,
  inTransaction,
  type Observer,
  observer,
  parseTarget,
  runs,
  type Target
} from "./server.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface CheckOptions {
  readonly url: string | undefined
  /** Print the report as JSON on stdout. */
  readonly json: boolean
  /** How long the interruption storm runs. */
  readonly stormMs: number
  /** The limit for the whole run. */
  readonly timeoutMs: number
}

/**
 * @since 0.1.0
 * @category models
 */
export type Status = "pass" | "warn" | "fail" | "skip"

/**
 * One line of the report.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckLine {
  readonly id: string
  readonly title: string
  readonly status: Status
  readonly detail: string
  readonly data?: Record<string, unknown>
}

/**
 * The run completed and at least one line failed (exit code 1).
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckFailed extends Data.TaggedError("CheckFailed")<{ readonly failed: number }> {}

interface Client {
  readonly sql: SqlClient.SqlClient
  readonly pool: WardenPool.WardenPool
}

const TITLE_WIDTH = 35
const LABEL: Record<Status, string> = { pass: "PASS", warn: "WARN", fail: "FAIL", skip: "SKIP" }
const TONE = { pass: "pass", warn: "warn", fail: "fail", skip: "dim" } as const

/**
 * One report line as text.
 *
 * @since 0.1.0
 * @category rendering
 */
export const renderLine = (line: CheckLine, paint: Paint): string =>
  `  ${paint(TONE[line.status], LABEL[line.status])}  ${pad(line.title, TITLE_WIDTH)} ${line.detail}`

const now = () => performance.now()

const hex = (bytes: number) => randomBytes(bytes).toString("hex")

const ms = (duration: Duration.Duration) => Duration.toMillis(duration)

/** `0 (off)`, or a duration for a setting given in `unit`. */
const settingText = (value: number | undefined, unit: "ms" | "s"): string => {
  if (value === undefined) return "n/a"
  if (value === 0) return "off"
  return formatMs(unit === "s" ? value * 1_000 : value)
}

const isStartupRefused = (error: unknown): boolean => {
  const text = String((error as { message?: unknown })?.message ?? "")
  let inner: unknown = error
  const messages = [text]
  for (let i = 0; i < 4 && typeof inner === "object" && inner !== null; i++) {
    inner = (inner as { cause?: unknown }).cause
    const m = (inner as { message?: unknown } | undefined)?.message
    if (typeof m === "string") messages.push(m)
  }
  return messages.some((m) => /unsupported startup parameter|unrecognized configuration parameter/i.test(m))
}

const SETTINGS = [
  "max_connections",
  "superuser_reserved_connections",
  "reserved_connections",
  "idle_in_transaction_session_timeout",
  "statement_timeout",
  "client_connection_check_interval",
  "tcp_keepalives_idle",
  "tcp_keepalives_interval",
  "tcp_keepalives_count"
]

type Settings = Record<string, number | undefined>

const toSettings = (rows: ReadonlyArray<{ name: string; setting: string }>): Settings =>
  Object.fromEntries(rows.map((r) => [r.name, Number(r.setting)]))

const SETTINGS_QUERY = "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])"

/** A query through a pg-warden client, failing with a `CliError` that says what did not work. */
const run = <A extends object>(client: Client, text: string, values: ReadonlyArray<unknown> = []) =>
  client.sql
    .unsafe<A>(text, values)
    .pipe(
      Effect.mapError(
        (error) =>
          new CliError({ kind: "server", message: `${text.split(/\s+/).slice(0, 4).join(" ")}: ${error.message}` })
      )
    )

const counterDelta = (before: WardenPool.PoolCounters, after: WardenPool.PoolCounters) => ({
  reused: after.reused - before.reused,
  rolledBack: after.rolledBack - before.rolledBack,
  reset: after.reset - before.reset,
  cancelled: after.cancelled - before.cancelled,
  closed: after.closed - before.closed,
  terminated: after.terminated - before.terminated
})

const releaseText = (d: ReturnType<typeof counterDelta>): string => {
  if (d.terminated > 0) return "released by terminating the backend (cancel or rollback not confirmed)"
  if (d.cancelled > 0 && d.rolledBack > 0) return "released: statement cancelled (57014), rolled back, session reused"
  if (d.cancelled > 0) return "released: statement cancelled (57014), session reused"
  if (d.rolledBack > 0) return "released: rolled back, session reused"
  if (d.reset > 0) return "released: rolled back and session state reset, session reused"
  return "released"
}

/**
 * Runs the check and prints its report.
 *
 * @since 0.1.0
 * @category commands
 */
export const check = (options: CheckOptions): Effect.Effect<void, CliError | CheckFailed> =>
  Effect.gen(function* () {
    const target = yield* parseTarget(options.url)
    const app = `pg-warden-check-${hex(4)}`
    const lines: Array<CheckLine> = []
    const out = process.stdout
    const paint = painter(!options.json && colorFor(out))
    const print = (text = "") => {
      if (!options.json) out.write(`${text}\n`)
    }
    const emit = (line: CheckLine) => {
      lines.push(line)
      print(renderLine(line, paint))
    }
    const started = now()
    print(`${paint("bold", "pg-warden check")} ${target.display}`)
    print(paint("dim", `  application_name ${app}; a temporary table; only this run's own sessions`))
    print()

    const finish = (error: CliError | undefined, timedOut: boolean) =>
      Effect.gen(function* () {
        const summary = {
          pass: lines.filter((l) => l.status === "pass").length,
          warn: lines.filter((l) => l.status === "warn").length,
          fail: lines.filter((l) => l.status === "fail").length,
          skip: lines.filter((l) => l.status === "skip").length
        }
        const ok = error === undefined && summary.fail === 0
        if (options.json) {
          out.write(
            `${JSON.stringify(
              {
                ok,
                target: target.display,
                applicationName: app,
                checks: lines,
                summary,
                durationMs: Math.round(now() - started),
                ...(error !== undefined ? { error: { kind: error.kind, message: error.message } } : {})
              },
              null,
              2
            )}\n`
          )
        } else if (error === undefined) {
          print()
          const counts = `${summary.pass} passed, ${plural(summary.warn, "warning")}, ${summary.fail} failed${summary.skip > 0 ? `, ${summary.skip} skipped` : ""} in ${formatMs(now() - started)}`
          print(
            ok
              ? `  ${paint("pass", "PASS")}  ${counts}`
              : `  ${paint("fail", "FAIL")}  ${counts}${timedOut ? " (time limit reached)" : ""}`
          )
        }
        if (error !== undefined) return yield* Effect.fail(error)
        if (!ok) return yield* Effect.fail(new CheckFailed({ failed: summary.fail }))
      })

    const body = checks(target, app, options, emit)
    const result = yield* body.pipe(Effect.timeoutOption(options.timeoutMs), Effect.either)
    if (Either.isLeft(result)) return yield* finish(result.left, false)
    if (Option.isNone(result.right)) {
      emit({
        id: "time-limit",
        title: "time limit",
        status: "fail",
        detail: `the check did not finish within ${formatMs(options.timeoutMs)}`
      })
      yield* Effect.ignore(terminateOwn(target, app))
      return yield* finish(undefined, true)
    }
    return yield* finish(undefined, false)
  })

/** Ends this run's own sessions from a fresh observer (used when the run was cut short). */
const terminateOwn = (target: Target, app: string) =>
  Effect.scoped(
    Effect.flatMap(observer(target, `${app}-cleanup`, 5_000), (obs) => obs.terminateAll(app)).pipe(
      Effect.timeout(10_000)
    )
  )

const checks = (
  target: Target,
  app: string,
  options: CheckOptions,
  emit: (line: CheckLine) => void
): Effect.Effect<void, CliError> =>
  Effect.scoped(
    Effect.gen(function* () {
      // The pools live in their own scope, closed before the last check looks for leftovers.
      const pools = yield* Scope.make()
      yield* Effect.addFinalizer(() => Effect.ignore(Effect.timeout(Scope.close(pools, Exit.void), 10_000)))

      const configFor = (maxConnections: number, serverSafety: boolean): WardenClient.WardenClientConfig => ({
        url: Redacted.make(target.url),
        applicationName: app,
        maxConnections,
        connectTimeout: 5_000,
        acquireTimeout: 5_000,
        ...(serverSafety ? {} : { serverSafety: false as const })
      })

      // 1. connect, with pg-warden's defaults (server safety settings in the startup packet).
      const connectStarted = now()
      let safetyRefused: unknown
      let single = yield* openClient(target, configFor(1, true), pools).pipe(Effect.either)
      if (Either.isLeft(single) && isStartupRefused(single.left)) {
        safetyRefused = single.left
        single = yield* openClient(target, configFor(1, false), pools).pipe(Effect.either)
      }
      if (Either.isLeft(single)) return yield* Effect.fail(connectError(single.left, target))
      const a = single.right
      const connectMs = now() - connectStarted
      const bound = ms(WardenClient.cleanupBound(configFor(1, safetyRefused === undefined)))

      const obs = yield* observer(target, `${app}-observer`, 5_000)
      const [info] = yield* run<{
        version: string
        num: number
        user: string
        database: string
        addr: string | null
        port: number | null
        superuser: boolean
        used: number
        ssl: boolean | null
      }>(
        a,
        `SELECT current_setting('server_version') AS version, current_setting('server_version_num')::int AS num,
                current_user AS user, current_database() AS database, inet_server_addr()::text AS addr,
                inet_server_port() AS port, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
                (SELECT count(*)::int FROM pg_stat_activity
                  WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL)) AS used,
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl`
      )
      if (info === undefined) return yield* Effect.fail(new CliError({ kind: "server", message: "no server info" }))
      const transport =
        info.addr === null ? "Unix-domain socket" : `TCP ${target.host}:${target.port}${info.ssl ? ", TLS" : ""}`
      emit({
        id: "connect",
        title: "connect",
        status: "pass",
        detail: `PostgreSQL ${info.version} as ${info.user} on ${info.database} over ${transport}, pg-warden session in ${formatMs(connectMs)}`,
        data: { version: info.version, versionNum: info.num, user: info.user, database: info.database, connectMs }
      })
      if (safetyRefused !== undefined) {
        emit({
          id: "startup-settings",
          title: "server safety settings at startup",
          status: "fail",
          detail: `refused (${String((safetyRefused as Error).message)}): a proxy such as PgBouncer rejects startup options; use serverSafety: false and set idle_in_transaction_session_timeout and tcp_keepalives_* on the server`
        })
      }

      // 2. privileges: the temporary table.
      const table = `pg_warden_check_${hex(4)}`
      const created = yield* a.sql.unsafe(`CREATE TEMPORARY TABLE ${table} (id int)`).pipe(Effect.either)
      if (Either.isLeft(created)) {
        const code = WardenError.sqlState(created.left)
        if (code === "42501") {
          return yield* Effect.fail(
            new CliError({
              kind: "privileges",
              message: `insufficient privileges: user "${info.user}" may not create temporary tables in database "${info.database}" (SQLSTATE 42501). pg-warden check needs the TEMP privilege: GRANT TEMP ON DATABASE "${info.database}" TO "${info.user}"`
            })
          )
        }
        return yield* Effect.fail(
          new CliError({ kind: "server", message: `could not create a temporary table: ${created.left.message}` })
        )
      }
      emit({
        id: "privileges",
        title: "privileges",
        status: "pass",
        detail: `temporary table ${table} created (TEMP privilege); pg_stat_activity shows this run's sessions`,
        data: { table }
      })

      // 3. settings, as the server has them (observer) and as pg-warden's sessions see them.
      const names = SETTINGS
      const server = toSettings(yield* obs.query<{ name: string; setting: string }>(SETTINGS_QUERY, [names]))
      const session = toSettings(yield* run<{ name: string; setting: string }>(a, SETTINGS_QUERY, [names]))
      const headroom = settingsLines(info, server, session, safetyRefused !== undefined)
      for (const line of headroom.lines) emit(line)

      // 4. the cancel round trip, on a plain session of our own.
      emit(yield* cancelRoundTrip(target, app, obs))

      // 5–7. interruptions on pg-warden's pool of 1.
      emit(yield* midStatement(a, app, obs, bound))
      emit(yield* midTransactionIdle(a, app, obs, bound, table))
      emit(yield* midTransactionStatement(a, app, obs, bound, table))

      // 8. a short storm on a pool of 4.
      if (headroom.free < 6) {
        emit({
          id: "storm",
          title: "interruption storm",
          status: "skip",
          detail: `skipped: only ${headroom.free} free connection slots (it needs 5)`
        })
      } else {
        emit(
          yield* stormLine(
            a,
            target,
            configFor(Interruptions.storm.connections, safetyRefused === undefined),
            pools,
            app,
            obs,
            bound,
            options.stormMs
          )
        )
      }

      // 9. nothing left behind.
      yield* Effect.ignore(a.sql.unsafe(`DROP TABLE IF EXISTS ${table}`).pipe(Effect.timeout(2_000)))
      const closeStarted = now()
      const closed = yield* Scope.close(pools, Exit.void).pipe(Effect.timeoutOption(bound + 2_000))
      const closeMs = now() - closeStarted
      const gone = yield* obs.waitFor(app, (bs) => bs.length === 0, 3_000)
      const left = countStates(gone.backends)
      if (left.total > 0) yield* obs.terminateAll(app)
      emit({
        id: "cleanup",
        title: "nothing left behind",
        status: gone.ok && Option.isSome(closed) ? "pass" : "fail",
        detail: gone.ok
          ? `pools closed in ${formatMs(closeMs)}; the server shows no session for ${app}; temporary table dropped`
          : `after closing the pools the server still showed ${plural(left.total, "session")} (${left.active} active, ${left.idleInTransaction} idle in transaction, ${left.idle} idle); terminated`
      })
    })
  )

/** Builds a pg-warden client in `scope`. */
const openClient = (
  _target: Target,
  config: WardenClient.WardenClientConfig,
  scope: Scope.Scope
): Effect.Effect<Client, unknown> =>
  Layer.buildWithScope(WardenClient.layer(config), scope).pipe(
    Effect.map((env) => ({
      sql: Context.get(env, SqlClient.SqlClient),
      pool: Context.get(env, WardenPool.WardenPool)
    }))
  )

const settingsLines = (
  info: { readonly num: number; readonly user: string; readonly superuser: boolean; readonly used: number },
  server: Settings,
  session: Settings,
  safetyRefused: boolean
): { readonly lines: Array<CheckLine>; readonly free: number } => {
  const lines: Array<CheckLine> = []
  const max = server.max_connections ?? 100
  const reserved = (server.superuser_reserved_connections ?? 0) + (server.reserved_connections ?? 0)
  const usable = info.superuser ? max : max - reserved
  const free = usable - info.used
  lines.push({
    id: "max-connections",
    title: "max_connections headroom",
    status: free < 5 ? "fail" : free < usable * 0.2 ? "warn" : "pass",
    detail: `${info.used} of ${max} connections in use, ${free} free for ${info.user}${!info.superuser && reserved > 0 ? ` (${reserved} reserved)` : ""}${free < 5 ? ": pools will fail to connect" : free < usable * 0.2 ? ": less than 20 % headroom" : ""}`,
    data: { max, used: info.used, free, reserved }
  })
  const idleTx = session.idle_in_transaction_session_timeout ?? 0
  lines.push({
    id: "idle-in-transaction-timeout",
    title: "idle_in_transaction_session_timeout",
    status: idleTx > 0 ? "pass" : "warn",
    detail:
      idleTx > 0
        ? `${settingText(idleTx, "ms")} in pg-warden sessions (server default: ${settingText(server.idle_in_transaction_session_timeout, "ms")})`
        : `off in pg-warden sessions${safetyRefused ? " (startup settings refused)" : ""}: a session a crashed client left in a transaction keeps its locks until the server notices`,
    data: { session: idleTx, server: server.idle_in_transaction_session_timeout }
  })
  const statementTimeout = server.statement_timeout ?? 0
  lines.push({
    id: "statement-timeout",
    title: "statement_timeout",
    status: statementTimeout > 0 && statementTimeout < 1_000 ? "warn" : "pass",
    detail:
      statementTimeout === 0
        ? "0 (off): a statement runs until it finishes or is cancelled; pg-warden cancels interrupted statements itself"
        : `${settingText(statementTimeout, "ms")}: longer statements fail with 57014${statementTimeout < 1_000 ? " (very short)" : ""}`,
    data: { server: statementTimeout }
  })
  const check = session.client_connection_check_interval
  lines.push({
    id: "client-connection-check-interval",
    title: "client_connection_check_interval",
    status: info.num >= 140000 && (check ?? 0) > 0 ? "pass" : "warn",
    detail:
      info.num < 140000
        ? "not available before PostgreSQL 14: a backend whose client vanished runs its statement to the end"
        : (check ?? 0) > 0
          ? `${settingText(check, "ms")} in pg-warden sessions (server default: ${settingText(server.client_connection_check_interval, "ms")}): a backend whose client vanished stops its statement`
          : "0 (off) in pg-warden sessions: a backend whose client vanished runs its statement to the end",
    data: { session: check, server: server.client_connection_check_interval }
  })
  const idle = session.tcp_keepalives_idle ?? 0
  const viaTcp = (server.tcp_keepalives_idle ?? 0) !== 0 || idle !== 0 || session.tcp_keepalives_count !== 0
  lines.push({
    id: "tcp-keepalive",
    title: "TCP keepalive",
    status: idle > 0 || !viaTcp ? "pass" : "warn",
    detail: !viaTcp
      ? "not applicable: connected over a Unix-domain socket"
      : idle > 0
        ? `idle ${idle} s, interval ${session.tcp_keepalives_interval} s, count ${session.tcp_keepalives_count} in pg-warden sessions (server default: idle ${server.tcp_keepalives_idle === 0 ? "0 = the OS default, often 2 h" : `${server.tcp_keepalives_idle} s`}): a backend cut off by a partition is reaped`
        : "the OS default in pg-warden sessions (often 2 h): a backend cut off by a partition lingers that long",
    data: {
      idle,
      interval: session.tcp_keepalives_interval,
      count: session.tcp_keepalives_count,
      serverIdle: server.tcp_keepalives_idle
    }
  })
  return { lines, free }
}

/** Does a protocol CancelRequest, sent on a fresh socket to the URL's host and port, stop a running statement? */
const cancelRoundTrip = (target: Target, app: string, obs: Observer): Effect.Effect<CheckLine, CliError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const title = "cancel round trip"
      const client = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const client = new Pg.Client({
              connectionString: target.url,
              application_name: app,
              connectionTimeoutMillis: 5_000
            })
            client.on("error", () => {})
            await client.connect()
            return client
          },
          catch: (error) => connectError(error, target)
        }),
        (client) => Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.timeoutOption(1_000))
      )
      const pid = ServerObserver.backendPid(client)
      const endpoint = { host: client.host, port: client.port }
      const statement = yield* Effect.forkDaemon(
        Effect.promise(() =>
          client.query("SELECT pg_sleep(5)").then(
            () => ({ code: "ok" as string | undefined }),
            (error: unknown) => ({ code: WardenError.sqlState(error) ?? String(error) })
          )
        )
      )
      const seen = yield* obs.waitFor(app, (bs) => bs.some((b) => b.pid === pid && runs("pg_sleep(5)")(b)), 3_000)
      if (!seen.ok) {
        return { id: "cancel", title, status: "fail", detail: "the test statement never showed as running" } as const
      }
      const sent = now()
      const outcome = yield* Effect.promise(() => ServerObserver.cancelByProtocol(client, 2_000))
      const result = yield* Fiber.join(statement).pipe(Effect.timeoutOption(3_000))
      const elapsed = now() - sent
      if (!(Option.isSome(result) && result.value.code === "57014")) {
        // Whatever happened, the test statement must not outlive the check.
        yield* Effect.ignore(obs.query("SELECT pg_terminate_backend($1)", [pid]))
      }
      const where = endpoint.host.startsWith("/") ? `socket ${endpoint.host}` : `${endpoint.host}:${endpoint.port}`
      if (outcome !== "delivered") {
        return {
          id: "cancel",
          title,
          status: "fail",
          detail: `could not deliver a CancelRequest to ${where} (${outcome === "timeout" ? "no answer within 2 s" : "connection failed"}); pg-warden would have to terminate interrupted backends`
        } as const
      }
      if (Option.isSome(result) && result.value.code === "57014") {
        return {
          id: "cancel",
          title,
          status: "pass",
          detail: `a CancelRequest on a fresh socket to ${where} stopped pg_sleep(5) on backend ${pid} (57014) ${formatMs(elapsed)} after it was sent`,
          data: { ms: elapsed, pid }
        } as const
      }
      return {
        id: "cancel",
        title,
        status: "fail",
        detail: `the CancelRequest was delivered to ${where}, but the statement ${Option.isSome(result) ? `ended with ${result.value.code}` : "kept running"}: something on this path (a proxy?) does not forward CancelRequests to the backend; pg-warden then terminates interrupted backends instead`
      } as const
    })
  )

const fail = (id: string, title: string, detail: string): CheckLine => ({ id, title, status: "fail", detail })

/** Interrupting `select pg_sleep(10)` on pg-warden's pool of 1. */
const midStatement = (a: Client, app: string, obs: Observer, bound: number): Effect.Effect<CheckLine, CliError> =>
  Effect.gen(function* () {
    const id = "mid-statement"
    const title = "interrupt mid-statement"
    const before = (yield* a.pool.stats).counters
    const fiber = yield* Effect.forkDaemon(a.sql`SELECT pg_sleep(10)`)
    const seen = yield* obs.waitFor(app, (bs) => bs.some(runs("pg_sleep(10)")), 3_000)
    if (!seen.ok) {
      yield* Fiber.interruptFork(fiber)
      return fail(id, title, "the statement never showed as running on the server")
    }
    const stats = makeStats()
    const sample = yield* interruptMeasured(fiber, stats, bound + 1_000)
    const stopped = yield* obs.waitFor(app, (bs) => !bs.some(runs("pg_sleep(10)")), 2_000)
    const delta = counterDelta(before, (yield* a.pool.stats).counters)
    yield* probe(a.sql`SELECT 1`, stats, 2_000, "the next statement")
    const problems = [
      ...(sample.hung || sample.ms > bound
        ? [`the interruption took ${formatMs(sample.ms)} (bound ${formatMs(bound)})`]
        : []),
      ...(stopped.ok ? [] : ["the server still ran the statement 2 s later"]),
      ...(stats.collateral > 0 ? [`the next statement failed: ${[...stats.failures.keys()][0]}`] : [])
    ]
    return problems.length > 0
      ? fail(id, title, problems.join("; "))
      : {
          id,
          title,
          status: "pass",
          detail: `pg_sleep(10) interrupted in ${formatMs(sample.ms)} (bound ${formatMs(bound)}), gone from the server; ${releaseText(delta)}`,
          data: { ms: sample.ms, bound, release: delta }
        }
  })

/**
 * Whether transaction `xid` committed, as the server records it (`txid_status`). The scenarios
 * cannot count their rows afterwards: the temporary table lives in the interrupted session, and a
 * release resets that session (C8), temporary tables included.
 */
const committed = (a: Client, xid: string | undefined) =>
  xid === undefined
    ? Effect.succeed(false)
    : a.sql.unsafe<{ status: string | null }>(`SELECT txid_status(${Number(xid)}) AS status`).pipe(
        Effect.map((rows) => rows[0]?.status === "committed"),
        Effect.mapError((error) => new CliError({ kind: "server", message: `reading txid_status: ${error.message}` }))
      )

/**
 * The first statements of a scenario's transaction: its temporary table (created inside the
 * transaction, so the session it runs on has it), its transaction id, and one row.
 */
const openTransaction = (a: Client, table: string, id: number, xid: Ref.Ref<string | undefined>) =>
  a.sql.unsafe(`CREATE TEMPORARY TABLE IF NOT EXISTS ${table} (id int)`).pipe(
    Effect.zipRight(a.sql.unsafe<{ xid: string }>("SELECT txid_current()::text AS xid")),
    Effect.flatMap((rows) => Ref.set(xid, rows[0]?.xid)),
    Effect.zipRight(a.sql.unsafe(`INSERT INTO ${table} VALUES (${id})`))
  )

/**
 * The verdict of an interrupted transaction: the interruption stayed within the bound, the
 * server no longer shows the transaction, and its row was not committed.
 */
const transactionVerdict = (
  id: string,
  title: string,
  seen: {
    readonly ms: number
    readonly hung: boolean
    readonly bound: number
    readonly clean: boolean
    readonly committed: boolean
    readonly delta: ReturnType<typeof counterDelta>
    readonly notClean: string
    readonly passed: string
  }
): CheckLine => {
  const problems = [
    ...(seen.hung || seen.ms > seen.bound
      ? [`the interruption took ${formatMs(seen.ms)} (bound ${formatMs(seen.bound)})`]
      : []),
    ...(seen.clean ? [] : [seen.notClean]),
    ...(seen.committed ? ["the interrupted transaction committed (txid_status)"] : [])
  ]
  return problems.length > 0
    ? fail(id, title, problems.join("; "))
    : {
        id,
        title,
        status: "pass",
        detail: `interrupted in ${formatMs(seen.ms)}, ${seen.passed}, it did not commit; ${releaseText(seen.delta)}`,
        data: { ms: seen.ms, bound: seen.bound, release: seen.delta }
      }
}

/** Interrupting a transaction that sits idle between statements (after an insert). */
const midTransactionIdle = (
  a: Client,
  app: string,
  obs: Observer,
  bound: number,
  table: string
): Effect.Effect<CheckLine, CliError> =>
  Effect.gen(function* () {
    const id = "mid-transaction-idle"
    const title = "interrupt mid-transaction (idle)"
    const before = (yield* a.pool.stats).counters
    const inserted = yield* Deferred.make<void>()
    const xid = yield* Ref.make<string | undefined>(undefined)
    const fiber = yield* Effect.forkDaemon(
      a.sql.withTransaction(
        openTransaction(a, table, 1, xid).pipe(
          Effect.zipRight(Deferred.succeed(inserted, undefined)),
          Effect.zipRight(Effect.never)
        )
      )
    )
    const ready = yield* Deferred.await(inserted).pipe(Effect.timeoutOption(3_000))
    const seen = yield* obs.waitFor(app, (bs) => bs.some(inTransaction), 2_000)
    if (Option.isNone(ready) || !seen.ok) {
      yield* Fiber.interruptFork(fiber)
      return fail(id, title, "the transaction never showed as idle in transaction on the server")
    }
    const stats = makeStats()
    const sample = yield* interruptMeasured(fiber, stats, bound + 1_000)
    const clean = yield* obs.waitFor(app, (bs) => !bs.some(inTransaction), 2_000)
    const delta = counterDelta(before, (yield* a.pool.stats).counters)
    return transactionVerdict(id, title, {
      ms: sample.ms,
      hung: sample.hung,
      bound,
      clean: clean.ok,
      committed: yield* committed(a, yield* Ref.get(xid)),
      delta,
      notClean: "the server still showed the session idle in transaction 2 s later",
      passed: "no longer idle in transaction on the server"
    })
  })

/** Interrupting a transaction while its second statement runs. */
const midTransactionStatement = (
  a: Client,
  app: string,
  obs: Observer,
  bound: number,
  table: string
): Effect.Effect<CheckLine, CliError> =>
  Effect.gen(function* () {
    const id = "mid-transaction-statement"
    const title = "interrupt mid-transaction (query)"
    const before = (yield* a.pool.stats).counters
    const xid = yield* Ref.make<string | undefined>(undefined)
    const fiber = yield* Effect.forkDaemon(
      a.sql.withTransaction(openTransaction(a, table, 2, xid).pipe(Effect.zipRight(a.sql`SELECT pg_sleep(10)`)))
    )
    const seen = yield* obs.waitFor(app, (bs) => bs.some(runs("pg_sleep(10)")), 3_000)
    if (!seen.ok) {
      yield* Fiber.interruptFork(fiber)
      return fail(id, title, "the statement never showed as running on the server")
    }
    const stats = makeStats()
    const sample = yield* interruptMeasured(fiber, stats, bound + 1_000)
    const clean = yield* obs.waitFor(app, (bs) => !bs.some(inTransaction) && !bs.some(runs("pg_sleep(10)")), 2_000)
    const delta = counterDelta(before, (yield* a.pool.stats).counters)
    return transactionVerdict(id, title, {
      ms: sample.ms,
      hung: sample.hung,
      bound,
      clean: clean.ok,
      committed: yield* committed(a, yield* Ref.get(xid)),
      delta,
      notClean: "the server still ran the statement or held the transaction open 2 s later",
      passed: "statement stopped and transaction gone on the server"
    })
  })

/** A short random interruption storm on a pool of 4. */
const stormLine = (
  a: Client,
  target: Target,
  config: WardenClient.WardenClientConfig,
  pools: Scope.Scope,
  app: string,
  obs: Observer,
  bound: number,
  durationMs: number
): Effect.Effect<CheckLine, CliError> =>
  Effect.gen(function* () {
    const id = "storm"
    const title = "interruption storm"
    const opened = yield* openClient(target, config, pools).pipe(Effect.either)
    if (Either.isLeft(opened))
      return fail(
        id,
        title,
        `could not open a pool of ${Interruptions.storm.connections}: ${connectError(opened.left, target).message}`
      )
    const b = opened.right
    const before = (yield* b.pool.stats).counters
    const stats = makeStats()
    const deadlines: Deadlines = { interruptMs: bound, probeMs: 2_000, settleMs: 300 }
    const ctx: ScenarioContext = { observer: obs, app, stats, deadlines }
    yield* runBody(b.sql, ctx, (run) => storm(run, { ...Interruptions.storm, durationMs }))
    const delta = counterDelta(before, (yield* b.pool.stats).counters)
    // Both pools share the run's application_name: the storm pool's audit must not count the other's session.
    const others = yield* a.pool.audit.pipe(
      Effect.map((r) => new Set([...r.pool.idle, ...r.pool.leased, ...r.pool.releasing])),
      Effect.orElseSucceed(() => new Set<number>())
    )
    const audit = yield* b.pool.audit.pipe(Effect.either)
    const auditProblems = Either.isRight(audit)
      ? [...audit.right.unknownToPool.filter((x) => !others.has(x.pid)), ...audit.right.dirtyIdle]
      : []
    const values = stats.latencies.map((s) => s.ms)
    const latency = `p50 ${formatMs(percentile(values, 50))}, p99 ${formatMs(percentile(values, 99))}, max ${formatMs(percentile(values, 100))}`
    const common = [...stats.failures.entries()].sort((x, y) => y[1] - x[1])[0]
    const problems = [
      ...(stats.hung > 0 ? [`${stats.hung} interruptions took longer than ${formatMs(bound)}`] : []),
      ...(stats.collateral > 0
        ? [`${plural(stats.collateral, "fiber")} nobody interrupted failed (e.g. "${common?.[0]}")`]
        : []),
      ...(stats.running > 0 ? [`the server still ran ${plural(stats.running, "interrupted statement")}`] : []),
      ...(stats.idleInTx > 0 ? [`the server showed ${plural(stats.idleInTx, "session")} idle in transaction`] : []),
      ...(auditProblems.length > 0
        ? [`the pool's audit disagrees with pg_stat_activity: ${JSON.stringify(auditProblems.slice(0, 3))}`]
        : []),
      ...(stats.interrupted === 0 ? ["no transaction was interrupted (too short a storm?)"] : [])
    ]
    const release = `${delta.reused} reused, ${delta.rolledBack} rolled back, ${delta.reset} reset, ${delta.cancelled} cancelled, ${delta.terminated} terminated`
    return problems.length > 0
      ? fail(id, title, `${problems.join("; ")} (${stats.ok} ok, ${stats.interrupted} interrupted, ${latency})`)
      : {
          id,
          title,
          status: "pass",
          detail: `${formatMs(durationMs)}, ${Interruptions.storm.workers} fibers on ${Interruptions.storm.connections} connections: ${stats.ok} ok, ${stats.interrupted} interrupted (${latency}); none failed that nobody interrupted; nothing left running or idle in transaction; releases: ${release}`,
          data: {
            ok: stats.ok,
            interrupted: stats.interrupted,
            p50: percentile(values, 50),
            p99: percentile(values, 99),
            max: percentile(values, 100),
            collateral: stats.collateral,
            release: delta
          }
        }
  })
