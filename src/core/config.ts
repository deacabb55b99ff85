/**
 * Configuration resolution and validation, Effect-free: plain numbers (milliseconds) and strings
 * in, the pool's configuration out, every mistake a `CoreError` with reason `InvalidConfig`. Each
 * edition decodes its own option types (durations, redacted passwords) into `ConfigInput` first.
 *
 * @internal
 */
import type * as Pg from "pg"
import { parse as parseConnectionString } from "pg-connection-string"
import { CancelChannel } from "./control.js"
import { CoreError } from "./errors.js"
import type { PoolConfig } from "./pool.js"
import type { Deadlines, SessionConfig } from "./session.js"
import { CONTROL_APPLICATION_NAME, ControlSlots, controlNameOf, type Negotiated } from "./wire.js"

/** The defaults, in milliseconds where they are durations. */
export const defaults = {
  maxConnections: 10,
  minConnections: 0,
  connectTimeout: 5_000,
  acquireTimeout: 10_000,
  idleTimeout: 60_000,
  connectionTTL: 30 * 60_000,
  cancelTimeout: 500,
  drainTimeout: 1_000,
  rollbackTimeout: 1_000,
  resetTimeout: 1_000,
  terminateTimeout: 1_000,
  statementCacheSize: 256,
  controlConnections: 2,
  applicationName: "pg-warden",
  idleInTransactionSessionTimeout: 60_000,
  clientConnectionCheckInterval: 1_000,
  tcpKeepalives: { idle: 30_000, interval: 10_000, count: 3 }
} as const

/** pg-warden's server-side safety settings, in milliseconds; `null` keeps the server's value. */
export interface SafetyInput {
  readonly idleInTransactionSessionTimeout?: number | null | undefined
  readonly clientConnectionCheckInterval?: number | null | undefined
  readonly tcpKeepalives?:
    | { readonly idle: number; readonly interval: number; readonly count: number }
    | null
    | undefined
}

/** Everything the core needs to know, as plain values (durations in milliseconds). */
export interface ConfigInput {
  readonly url?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly database?: string | undefined
  readonly user?: string | undefined
  readonly password?: Pg.ClientConfig["password"] | undefined
  readonly ssl?: Pg.ClientConfig["ssl"] | undefined
  readonly types?: Pg.ClientConfig["types"] | undefined
  readonly stream?: Pg.ClientConfig["stream"] | undefined
  readonly maxConnections?: number | undefined
  readonly minConnections?: number | undefined
  readonly connectTimeout?: number | undefined
  readonly acquireTimeout?: number | undefined
  readonly idleTimeout?: number | undefined
  readonly leakDetectionThreshold?: number | undefined
  readonly validateIdleAfter?: number | undefined
  readonly auditInterval?: number | undefined
  readonly keepAliveDelay?: number | undefined
  readonly connectionTTL?: number | undefined
  readonly cancelTimeout?: number | undefined
  readonly drainTimeout?: number | undefined
  readonly rollbackTimeout?: number | undefined
  readonly resetTimeout?: number | undefined
  readonly terminateTimeout?: number | undefined
  readonly applicationName?: string | undefined
  readonly statementCacheSize?: number | undefined
  readonly cancelProbe?: boolean | undefined
  readonly cancelChannel?: boolean | undefined
  readonly sessionReset?: "auto" | "always" | undefined
  readonly serverSafety?: SafetyInput | false | undefined
  readonly statementTimeout?: number | undefined
  readonly lockTimeout?: number | undefined
  readonly startupParameters?: Readonly<Record<string, string>> | undefined
  /** A libpq `options` string (`-c name=value …`), merged like the URL's `options`. */
  readonly startupOptions?: string | undefined
  /** The server is PgBouncer in transaction mode (see `bouncerRefusals`). */
  readonly pgbouncer?: boolean | undefined
  /** Short-lived control connections (out-of-band terminates, audits) open at one time, at most. */
  readonly controlConnections?: number | undefined
}

/** What resolution gives: the pool's configuration (without a connect hook) and where it connects. */
export interface Resolved {
  readonly pool: Omit<PoolConfig, "session"> & { readonly session: Omit<SessionConfig, "onConnect"> }
  /** The connection as the user would describe it (for `PgClient.config`, span attributes). */
  readonly target: {
    readonly applicationName: string
    readonly host: string | undefined
    readonly port: number | undefined
    readonly user: string | undefined
    readonly database: string | undefined
    /** A password given as text (not a function). */
    readonly password: string | undefined
  }
}

const invalid = (detail: string, cause?: unknown) => new CoreError("InvalidConfig", detail, cause)

/** The cleanup deadlines of a configuration, with the defaults. */
export const deadlinesOf = (input: ConfigInput): Deadlines => ({
  cancel: input.cancelTimeout ?? defaults.cancelTimeout,
  drain: input.drainTimeout ?? defaults.drainTimeout,
  rollback: input.rollbackTimeout ?? defaults.rollbackTimeout,
  reset: input.resetTimeout ?? defaults.resetTimeout,
  terminate: input.terminateTimeout ?? defaults.terminateTimeout
})

/** The most an interruption waits for cleanup: the sum of the cleanup deadlines. */
export const cleanupBoundMs = (input: ConfigInput): number => {
  const d = deadlinesOf(input)
  return d.cancel + d.drain + d.rollback + d.reset + d.terminate
}

/** pg-warden's safety settings, as startup parameters; `explicit` says which the user set. */
const safetyParametersOf = (
  safety: SafetyInput | false | undefined
): { readonly parameters: Array<readonly [string, string]>; readonly explicit: ReadonlySet<string> } => {
  const explicit = new Set<string>()
  const parameters: Array<readonly [string, string]> = []
  if (safety === false) return { parameters, explicit }
  const s = safety ?? {}
  const ms = (v: number) => String(Math.max(0, Math.round(v)))
  const seconds = (v: number) => String(Math.max(1, Math.round(v / 1000)))
  if (s.idleInTransactionSessionTimeout !== null) {
    if (s.idleInTransactionSessionTimeout !== undefined) explicit.add("idle_in_transaction_session_timeout")
    parameters.push([
      "idle_in_transaction_session_timeout",
      ms(s.idleInTransactionSessionTimeout ?? defaults.idleInTransactionSessionTimeout)
    ])
  }
  if (s.tcpKeepalives !== null) {
    if (s.tcpKeepalives !== undefined) {
      for (const name of ["tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"]) explicit.add(name)
    }
    const k = s.tcpKeepalives ?? defaults.tcpKeepalives
    parameters.push(["tcp_keepalives_idle", seconds(k.idle)])
    parameters.push(["tcp_keepalives_interval", seconds(k.interval)])
    parameters.push(["tcp_keepalives_count", String(Math.max(1, Math.round(k.count)))])
  }
  if (s.clientConnectionCheckInterval !== null) {
    if (s.clientConnectionCheckInterval !== undefined) explicit.add("client_connection_check_interval")
    parameters.push([
      "client_connection_check_interval",
      ms(s.clientConnectionCheckInterval ?? defaults.clientConnectionCheckInterval)
    ])
  }
  return { parameters, explicit }
}

/**
 * Splits a libpq `options` string (`-c name=value --name=value`, backslash escapes) into
 * parameters. Anything else in it (other command-line switches) cannot be merged: `InvalidConfig`.
 */
const parseOptions = (options: string): Array<readonly [string, string]> => {
  const words: Array<string> = []
  let word = ""
  let escaped = false
  let inWord = false
  for (const c of options) {
    if (escaped) {
      word += c
      escaped = false
    } else if (c === "\\") {
      escaped = true
      inWord = true
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word)
      word = ""
      inWord = false
    } else {
      word += c
      inWord = true
    }
  }
  if (inWord) words.push(word)
  const out: Array<readonly [string, string]> = []
  for (let i = 0; i < words.length; i++) {
    let setting: string | undefined
    const current = words[i]!
    if (current === "-c") setting = words[++i]
    else if (current.startsWith("-c")) setting = current.slice(2)
    else if (current.startsWith("--")) setting = current.slice(2)
    const eq = setting?.indexOf("=") ?? -1
    if (setting === undefined || eq <= 0) {
      throw invalid(`the URL's options must be "-c name=value" settings, got ${JSON.stringify(options)}`)
    }
    out.push([setting.slice(0, eq).replace(/-/g, "_"), setting.slice(eq + 1)])
  }
  return out
}

/**
 * The startup parameters of every session: pg-warden's safety settings, merged with what the user
 * asked for (URL `options` and parameters, `startupParameters`, `statementTimeout`, `lockTimeout`).
 * A user value replaces a safety default of the same name; two different user values for one
 * parameter are a configuration error, never a silent choice.
 */
const mergeStartupParameters = (
  input: ConfigInput,
  fromUrl: ReadonlyArray<readonly [string, string, string]>
): Array<readonly [string, string]> => {
  const user = new Map<string, { readonly value: string; readonly source: string }>()
  const add = (name: string, value: string, source: string) => {
    const key = name.toLowerCase()
    const known = user.get(key)
    if (known !== undefined && known.value !== value) {
      throw invalid(`${key} is set twice: ${known.value} (${known.source}) and ${value} (${source})`)
    }
    user.set(key, { value, source })
  }
  for (const [name, value, source] of fromUrl) add(name, value, source)
  for (const [name, value] of Object.entries(input.startupParameters ?? {})) add(name, value, "startupParameters")
  const ms = (v: number) => `${Math.max(0, Math.round(v))}ms`
  if (input.statementTimeout !== undefined) add("statement_timeout", ms(input.statementTimeout), "statementTimeout")
  if (input.lockTimeout !== undefined) add("lock_timeout", ms(input.lockTimeout), "lockTimeout")
  const safety = safetyParametersOf(input.serverSafety)
  const out: Array<readonly [string, string]> = []
  for (const [name, value] of safety.parameters) {
    const mine = user.get(name)
    if (mine === undefined) {
      out.push([name, value])
    } else if (safety.explicit.has(name) && mine.value !== value) {
      throw invalid(`${name} is set twice: ${value} (serverSafety) and ${mine.value} (${mine.source})`)
    }
  }
  for (const [name, { value }] of user) out.push([name, value])
  return out
}

/**
 * What cannot work through PgBouncer in transaction mode, with what to do instead. PgBouncer 1.18 refuses
 * every startup parameter it does not track itself (`options` among them), so run-time settings cannot
 * travel with the connection; it has no support for named prepared statements; its keys are its own, so
 * a backend PID means nothing to the client; and a client's statements land on whichever server
 * backend is free, so a session-level setting, a LISTEN or the audit's PID map has no owner.
 */
const bouncerRefusals = (
  input: ConfigInput,
  fromUrl: ReadonlyArray<readonly [string, string, string]>
): ReadonlyArray<string> => {
  const refused: Array<string> = []
  const serverSide = "set it for the role on the server (ALTER ROLE … SET) or in PgBouncer's connect_query"
  for (const [name, , source] of fromUrl) refused.push(`${name} (${source}): ${serverSide}`)
  for (const name of Object.keys(input.startupParameters ?? {}))
    refused.push(`startupParameters.${name}: ${serverSide}`)
  if (input.statementTimeout !== undefined) refused.push(`statementTimeout: ${serverSide}`)
  if (input.lockTimeout !== undefined) refused.push(`lockTimeout: ${serverSide}`)
  if (input.serverSafety !== undefined && input.serverSafety !== false) {
    refused.push(`serverSafety: ${serverSide} (docs/DESIGN.md, "Through PgBouncer", lists the settings)`)
  }
  if (input.statementCacheSize !== undefined && input.statementCacheSize > 0) {
    refused.push(
      "statementCacheSize (or prepare): PgBouncer 1.18 cannot keep named prepared statements in transaction mode"
    )
  }
  if (input.cancelChannel === true) refused.push("cancelChannel: PgBouncer hides backend PIDs, cancels go by protocol")
  if (input.cancelProbe === true) {
    refused.push("cancelProbe: PgBouncer answers a CancelRequest before the server has acted on it")
  }
  if (input.sessionReset === "always") {
    refused.push('sessionReset "always": in transaction mode a reset lands on whichever backend is free')
  }
  if (input.auditInterval !== undefined && input.auditInterval > 0) {
    refused.push("auditInterval: the audit maps sessions to backends by PID, which PgBouncer hides")
  }
  return refused
}

/** URL parameters pg would send as run-time parameters of their own; pg-warden merges them instead. */
const URL_SETTINGS = ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"] as const

/**
 * Connection settings that come from a `pg.Pool` the caller owns (`fromPool`) rather than from
 * pg-warden's own options: they may carry a password function, evaluated per new connection.
 */
export type Adopted = Pick<
  Pg.ClientConfig,
  "connectionString" | "host" | "port" | "user" | "password" | "database" | "ssl" | "types" | "stream" | "options"
> & {
  readonly application_name?: string | undefined
  readonly statement_timeout?: number | false | undefined
  readonly lock_timeout?: number | undefined
  readonly idle_in_transaction_session_timeout?: number | undefined
}

/** Keeps only the fields that are set (pg treats an explicit `undefined` or `""` as "given"). */
const defined = <A extends object>(value: A): Partial<A> =>
  Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined && v !== null && v !== "")) as Partial<A>

/**
 * Validates the configuration and derives the pool's. Throws a `CoreError` (`InvalidConfig`) for
 * every mistake a user can make.
 */
export const resolveConfig = (input: ConfigInput, adopted?: Adopted): Resolved => {
  const url = input.url ?? adopted?.connectionString
  let parsed: ReturnType<typeof parseConnectionString> | undefined
  if (url !== undefined) {
    if (!/^postgres(ql)?:\/\//.test(url) && !url.startsWith("socket:")) {
      throw invalid("url must start with postgres:// or postgresql://")
    }
    try {
      // libpq's meaning of sslmode (`require` encrypts without verifying, as psql does), unless the URL asks for
      // pg's own with uselibpqcompat.
      parsed = parseConnectionString(url, /[?&]uselibpqcompat=/i.test(url) ? {} : { useLibpqCompat: true })
      new URL(url.startsWith("socket:") ? "socket://x" : url)
    } catch (cause) {
      throw invalid("url is not a valid connection string", cause)
    }
  }
  const maxConnections = input.maxConnections ?? defaults.maxConnections
  const minConnections = input.minConnections ?? defaults.minConnections
  if (!Number.isInteger(maxConnections) || maxConnections < 1) {
    throw invalid(`maxConnections must be a positive integer, got ${maxConnections}`)
  }
  if (!Number.isInteger(minConnections) || minConnections < 0 || minConnections > maxConnections) {
    throw invalid(`minConnections must be an integer between 0 and maxConnections, got ${minConnections}`)
  }
  const port = input.port ?? adopted?.port ?? (parsed?.port ? Number(parsed.port) : undefined)
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
    throw invalid(`port must be between 1 and 65535, got ${port}`)
  }
  const controlConnections = input.controlConnections ?? defaults.controlConnections
  if (!Number.isInteger(controlConnections) || controlConnections < 1) {
    throw invalid(`controlConnections must be a positive integer, got ${controlConnections}`)
  }
  const statementCacheSize = input.statementCacheSize ?? defaults.statementCacheSize
  if (!Number.isInteger(statementCacheSize) || statementCacheSize < 0) {
    throw invalid(`statementCacheSize must be a non-negative integer, got ${statementCacheSize}`)
  }
  for (const [name, value] of [
    ["validateIdleAfter", input.validateIdleAfter],
    ["auditInterval", input.auditInterval],
    ["keepAliveDelay", input.keepAliveDelay]
  ] as const) {
    if (value !== undefined && !(value >= 0 && Number.isFinite(value))) {
      throw invalid(`${name} must be a non-negative finite duration, got ${value} ms`)
    }
  }
  const leak = input.leakDetectionThreshold
  if (leak !== undefined && !(leak >= 0 && Number.isFinite(leak))) {
    throw invalid(`leakDetectionThreshold must be a non-negative finite duration, got ${leak} ms`)
  }

  if (input.sessionReset !== undefined && input.sessionReset !== "auto" && input.sessionReset !== "always") {
    throw invalid(`sessionReset must be "auto" or "always", got ${JSON.stringify(input.sessionReset)}`)
  }
  const deadlines = deadlinesOf(input)
  for (const [name, value] of Object.entries(deadlines)) {
    if (!(value > 0) || !Number.isFinite(value)) throw invalid(`${name}Timeout must be a positive finite duration`)
  }

  // The URL's application_name names the pool when the options do not; both, differing, is a
  // mistake: the audit and the out-of-band terminate find the pool's backends by this name.
  const urlApplicationName = (parsed?.application_name as string | undefined) || adopted?.application_name
  if (
    input.applicationName !== undefined &&
    urlApplicationName !== undefined &&
    urlApplicationName !== input.applicationName
  ) {
    throw invalid(
      `applicationName ${JSON.stringify(input.applicationName)} and the URL's application_name ` +
        `${JSON.stringify(urlApplicationName)} differ`
    )
  }
  const applicationName = (input.applicationName ?? urlApplicationName ?? defaults.applicationName).slice(0, 63)
  if (applicationName === CONTROL_APPLICATION_NAME) {
    throw invalid(`applicationName ${CONTROL_APPLICATION_NAME} is reserved for control connections`)
  }

  // Run-time parameters given with the connection (URL, adopted pool) merge with pg-warden's;
  // pg would otherwise send the URL's `options` in place of the safety settings.
  const fromUrl: Array<readonly [string, string, string]> = []
  const options = [adopted?.options, parsed?.options as string | undefined].filter(
    (o): o is string => typeof o === "string" && o.trim() !== ""
  )
  for (const o of options) for (const [name, value] of parseOptions(o)) fromUrl.push([name, value, "URL options"])
  if (input.startupOptions !== undefined && input.startupOptions.trim() !== "") {
    for (const [name, value] of parseOptions(input.startupOptions)) fromUrl.push([name, value, "startupOptions"])
  }
  for (const name of URL_SETTINGS) {
    const value = parsed?.[name] ?? adopted?.[name]
    if (value !== undefined && value !== null && value !== false) fromUrl.push([name, String(value), `URL ${name}`])
  }
  const bouncer = input.pgbouncer === true
  if (bouncer) {
    const refused = bouncerRefusals(input, fromUrl)
    if (refused.length > 0) throw invalid(`not possible through PgBouncer in transaction mode: ${refused.join("; ")}`)
  }
  const startupParameters = bouncer ? [] : mergeStartupParameters(input, fromUrl)

  const {
    options: _options,
    application_name: _applicationName,
    statement_timeout: _statementTimeout,
    lock_timeout: _lockTimeout,
    idle_in_transaction_session_timeout: _idle,
    ...connection
  } = (parsed ?? {}) as Record<string, unknown>
  // `defined` drops what is not set, so the spread below holds no `undefined` fields.
  const pgConfig = {
    ...defined({
      host: adopted?.host,
      port: adopted?.port,
      user: adopted?.user,
      password: adopted?.password,
      database: adopted?.database,
      ssl: adopted?.ssl,
      types: adopted?.types,
      stream: adopted?.stream
    }),
    ...defined({
      host: input.host,
      port: input.port,
      database: input.database,
      user: input.user,
      password: input.password,
      ssl: input.ssl,
      types: input.types,
      stream: input.stream
    }),
    // As with pg itself, what the URL says wins over the separate fields.
    ...(defined(connection) as Pg.ClientConfig)
  } as Pg.ClientConfig
  // libpq's sslmode=prefer and allow: one encryption first, the other when the server refuses it.
  const sslmode = parsed?.sslmode as string | undefined
  const sslFallback = sslmode === "prefer" || sslmode === "allow" ? sslmode : undefined
  if (sslmode === "allow") pgConfig.ssl = false
  else if (sslmode === "no-verify" && typeof pgConfig.ssl === "object") {
    // pg's own value (not libpq's): TLS without verification.
    pgConfig.ssl = { ...pgConfig.ssl, rejectUnauthorized: false }
  }
  if (
    sslmode !== undefined &&
    !["disable", "allow", "prefer", "require", "verify-ca", "verify-full", "no-verify"].includes(sslmode)
  ) {
    throw invalid(
      `sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full, got ${JSON.stringify(sslmode)}`
    )
  }
  const negotiated: Negotiated = {}
  const connectTimeoutMs = input.connectTimeout ?? defaults.connectTimeout
  const textPassword =
    typeof input.password === "string"
      ? input.password
      : parsed?.password
        ? parsed.password
        : typeof adopted?.password === "string"
          ? adopted.password
          : undefined
  return {
    target: {
      applicationName,
      host: input.host ?? parsed?.host ?? adopted?.host ?? undefined,
      port,
      user: input.user ?? parsed?.user ?? adopted?.user ?? undefined,
      database: input.database ?? parsed?.database ?? adopted?.database ?? undefined,
      password: textPassword
    },
    pool: {
      session: {
        client: pgConfig,
        applicationName,
        connectTimeoutMs,
        deadlines,
        startupParameters,
        statementCacheSize: bouncer ? 0 : statementCacheSize,
        cancelProbe: bouncer ? false : (input.cancelProbe ?? true),
        keepAliveDelayMs: input.keepAliveDelay ?? 30_000,
        alwaysReset: input.sessionReset === "always",
        cancelChannel:
          input.cancelChannel === false || bouncer
            ? undefined
            : new CancelChannel(pgConfig, applicationName, connectTimeoutMs, negotiated),
        control: {
          slots: new ControlSlots(controlConnections),
          applicationName: controlNameOf(applicationName),
          negotiated
        },
        pgbouncer: bouncer,
        sslFallback
      },
      maxConnections,
      minConnections,
      acquireTimeoutMs: input.acquireTimeout ?? defaults.acquireTimeout,
      idleTimeoutMs: input.idleTimeout ?? defaults.idleTimeout,
      leakDetectionMs: input.leakDetectionThreshold ?? 0,
      validateIdleAfterMs: input.validateIdleAfter ?? 30_000,
      auditIntervalMs: input.auditInterval ?? 0,
      maxLifetimeMs: input.connectionTTL ?? defaults.connectionTTL
    }
  }
}
