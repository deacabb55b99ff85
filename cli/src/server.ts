/**
 * What the command line knows about the server: the target parsed from a URL, the errors a user can
 * run into before anything works (bad URL, unreachable host, refused password, missing privileges),
 * and the observer, a plain `pg` session separate from every pool under test that reads the
 * server's own view in `pg_stat_activity`.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { parse as parseConnectionString } from "pg-connection-string"
import * as ServerObserver from "pg-warden/Observer"
import * as WardenError from "pg-warden/WardenError"

/**
 * Why the command could not do its job: `usage` (bad arguments or URL), `connect` (the server cannot
 * be reached), `auth` (the server refused the credentials), `privileges` (the user may not do what
 * the command needs), `server` (the server failed in an unexpected way). Always exit code 2.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliError extends Data.TaggedError("CliError")<{
  readonly kind: "usage" | "connect" | "auth" | "privileges" | "server"
  readonly message: string
}> {}

/**
 * A database URL, checked and taken apart.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly url: string
  /** The URL with its password replaced by `***`, for output. */
  readonly display: string
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
}

const USAGE_HINT = "expected postgres://user:password@host:port/database"

/**
 * Replaces the password of a URL by `***` (best effort: an unparseable URL is shown as a placeholder).
 *
 * @since 0.1.0
 * @category utils
 */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable URL>"
  }
}

/**
 * Checks a database URL and takes it apart, with a clear message when it cannot work.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseTarget = (url: string | undefined): Effect.Effect<Target, CliError> =>
  Effect.suspend(() => {
    if (url === undefined || url.trim() === "") {
      return Effect.fail(
        new CliError({
          kind: "usage",
          message: `no database URL: pass --url (${USAGE_HINT}) or set DATABASE_URL`
        })
      )
    }
    const invalid = (why: string) =>
      Effect.fail(
        new CliError({ kind: "usage", message: `invalid database URL ${redactUrl(url)}: ${why}; ${USAGE_HINT}` })
      )
    if (!/^postgres(ql)?:\/\//i.test(url)) return invalid("it must start with postgres:// or postgresql://")
    let parsed: ReturnType<typeof parseConnectionString>
    try {
      new URL(url)
      parsed = parseConnectionString(url)
    } catch {
      return invalid("it is not a valid URL")
    }
    const port = parsed.port ? Number(parsed.port) : 5432
    if (!Number.isInteger(port) || port < 1 || port > 65535) return invalid(`port ${parsed.port} is out of range`)
    const user = parsed.user ?? process.env.PGUSER ?? process.env.USER ?? "postgres"
    return Effect.succeed({
      url,
      display: redactUrl(url),
      host: parsed.host ?? "localhost",
      port,
      user,
      database: parsed.database ?? user
    })
  })

const codeOf = (value: unknown): string | undefined => {
  const code = (value as { code?: unknown } | undefined)?.code
  return typeof code === "string" ? code : undefined
}

/** The chain `error`, `error.cause`, ... (at most a few levels). */
const causes = (error: unknown): Array<unknown> => {
  const out: Array<unknown> = []
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    out.push(current)
    current = (current as { cause?: unknown }).cause
  }
  return out
}

const messageOf = (error: unknown): string => {
  const chain = causes(error)
  const innermost = chain.at(-1)
  return innermost instanceof Error ? innermost.message : String(innermost ?? error)
}

/**
 * Turns a failure to connect (an `SqlError` from pg-warden, or a `pg` error) into a message that says
 * what is wrong and what to check.
 *
 * @since 0.1.0
 * @category errors
 */
export const connectError = (error: unknown, target: Target): CliError => {
  const chain = causes(error)
  const warden = WardenError.fromSqlError(error)
  const at = `${target.host}:${target.port}`
  if (warden?.reason === "InvalidConfig") {
    return new CliError({ kind: "usage", message: `invalid configuration: ${warden.detail}` })
  }
  if (warden?.reason === "ConnectTimeout") {
    return new CliError({
      kind: "connect",
      message: `cannot reach ${at}: no answer within the connect timeout (${warden.detail}); check the host, the port and firewalls`
    })
  }
  const codes = chain.map(codeOf).filter((c): c is string => c !== undefined)
  const has = (...wanted: Array<string>) => codes.some((c) => wanted.includes(c))
  const text = messageOf(error)
  if (has("ECONNREFUSED")) {
    return new CliError({
      kind: "connect",
      message: `connection refused by ${at}: is PostgreSQL running there and listening on that port?`
    })
  }
  if (has("ENOTFOUND", "EAI_AGAIN", "EAI_NONAME")) {
    return new CliError({ kind: "connect", message: `unknown host ${target.host}: the name does not resolve` })
  }
  if (has("ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN")) {
    return new CliError({ kind: "connect", message: `cannot reach ${at}: host unreachable (${text})` })
  }
  if (has("28P01")) {
    return new CliError({
      kind: "auth",
      message: `password authentication failed for user "${target.user}": the server refused the password`
    })
  }
  if (has("28000")) {
    return new CliError({ kind: "auth", message: `the server refused user "${target.user}": ${text}` })
  }
  if (has("3D000")) {
    return new CliError({ kind: "connect", message: `database "${target.database}" does not exist on ${at}` })
  }
  if (has("42501")) {
    return new CliError({
      kind: "privileges",
      message: `insufficient privileges: ${text}; user "${target.user}" needs CONNECT on database "${target.database}"`
    })
  }
  if (has("53300")) {
    return new CliError({ kind: "connect", message: `the server has no free connection slot: ${text}` })
  }
  if (has("57P03")) {
    return new CliError({ kind: "connect", message: `the server is not accepting connections yet: ${text}` })
  }
  if (/SASL|password must be a string|client password/i.test(text)) {
    return new CliError({
      kind: "auth",
      message: `the server asks user "${target.user}" for a password and none usable was given (${text})`
    })
  }
  if (/timed? ?out/i.test(text)) {
    return new CliError({ kind: "connect", message: `cannot reach ${at}: ${text}` })
  }
  return new CliError({ kind: "connect", message: `could not connect to ${at}: ${text}` })
}

/**
 * A backend as `pg_stat_activity` shows it.
 *
 * @since 0.1.0
 * @category models
 */
export type Backend = ServerObserver.Backend

/**
 * Counts of backends by state.
 *
 * @since 0.1.0
 * @category models
 */
export type StateCounts = ServerObserver.StateCounts

/**
 * Counts backends by state (`idle in transaction (aborted)` counts as idle in transaction).
 *
 * @since 0.1.0
 * @category utils
 */
export const countStates = ServerObserver.countStates

/**
 * True for a backend that runs a statement whose text contains `fragment`.
 *
 * @since 0.1.0
 * @category utils
 */
export const runs = ServerObserver.runs

/**
 * True for a backend that sits in an open transaction.
 *
 * @since 0.1.0
 * @category utils
 */
export const inTransaction = ServerObserver.inTransaction

/**
 * The observer: pg-warden's `Observer` session (never a pool under test) with its failures described
 * for the user. It only ever terminates backends of an application name the command chose itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface Observer {
  readonly query: <A>(text: string, values?: ReadonlyArray<unknown>) => Effect.Effect<Array<A>, CliError>
  /** Backends (other than the observer) whose `application_name` is exactly `app`. */
  readonly backends: (app: string) => Effect.Effect<Array<Backend>, CliError>
  /** Polls until `predicate` holds or `timeoutMs` passed; returns the last view and whether it held. */
  readonly waitFor: (
    app: string,
    predicate: (backends: ReadonlyArray<Backend>) => boolean,
    timeoutMs: number
  ) => Effect.Effect<{ readonly ok: boolean; readonly backends: ReadonlyArray<Backend> }, CliError>
  /** `pg_terminate_backend` for every backend of `app`; returns how many were signalled. */
  readonly terminateAll: (app: string) => Effect.Effect<number, CliError>
}

/**
 * Opens the observer session (closed with the scope). A failure to connect is described for the user.
 *
 * @since 0.1.0
 * @category constructors
 */
export const observer = (
  target: Target,
  applicationName: string,
  connectTimeoutMs: number
): Effect.Effect<Observer, CliError, Scope.Scope> =>
  Effect.gen(function* () {
    const session = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => ServerObserver.Observer.connect(target.url, { applicationName, connectTimeoutMs }),
        catch: (error) => connectError(error, target)
      }),
      (session) => Effect.promise(() => session.close())
    )
    const use = <A>(f: () => Promise<A>) =>
      Effect.tryPromise({
        try: f,
        catch: (error) => new CliError({ kind: "server", message: `the observer session failed: ${messageOf(error)}` })
      })
    return {
      query: (text, values) => use(() => session.query(text, values)),
      backends: (app) => use(() => session.backends(app)),
      waitFor: (app, predicate, timeoutMs) => use(() => session.waitForBackends(app, predicate, timeoutMs)),
      terminateAll: (app) => use(() => session.terminateAll(app))
    }
  })
