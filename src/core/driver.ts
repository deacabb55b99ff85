/**
 * The one door to `pg`'s internals. pg-warden tracks what the server is doing with a session more
 * closely than `pg`'s public API tells: whether ReadyForQuery came (so it hands `pg` the next
 * statement only then, and `pg`'s own queue stays empty), the transaction status, which names are
 * prepared. Every such use of a private field is here, `checkDriver` verifies at start-up that
 * the installed `pg` still has them (a clear error instead of a wrong guess), and
 * `test/driver.test.ts` pins down the behaviours behind them against a real server. `pg` is pinned
 * to `~8.23` for this reason.
 *
 * @internal
 */
import * as Pg from "pg"

/** `pg`'s Connection, as the submittables of begin.ts write to it. */
export interface Wire {
  readonly stream: { cork?: () => void; uncork?: () => void; destroy?: () => void }
  /** Names whose Parse was sent and not yet answered. */
  readonly submittedNamedStatements: Record<string, string>
  /** Names the server confirmed as prepared (ParseComplete); pg skips Parse for them. */
  parsedStatements: Record<string, string>
  parse(query: { text: string }): void
  close(message: { type: "S" | "P"; name: string }): void
  bind(config: object): void
  execute(config: object): void
  on(event: "readyForQuery", listener: () => void): void
}

/** The private parts of `pg.Client` pg-warden relies on. */
interface ClientInternals {
  readonly readyForQuery: boolean
  readonly connection: Wire
  /** Type parsers of the client, which pg copies onto each Query it creates itself. */
  readonly _types: unknown
  /** The TLS setting pg connected with (`ssl` of its configuration, the connection string's included). */
  readonly ssl: Pg.ClientConfig["ssl"] | undefined
  /** BackendKeyData, for cancels. */
  readonly processID: number | undefined
  readonly secretKey: number | undefined
  /** Status of the last ReadyForQuery: I idle, T in a transaction, E in a failed one. */
  getTransactionStatus(): "I" | "T" | "E" | null
}

const internals = (client: Pg.Client): ClientInternals => client as unknown as ClientInternals

/** The backend's process id and cancel key, known once the client connected. */
export const backendKey = (client: Pg.Client): { readonly pid: number; readonly secretKey: number } => ({
  pid: internals(client).processID ?? 0,
  secretKey: internals(client).secretKey ?? 0
})

/** Calls `listener` at every ReadyForQuery the server sends. */
export const onReadyForQuery = (client: Pg.Client, listener: () => void): void =>
  internals(client).connection.on("readyForQuery", listener)

/** True when the server's last message was ReadyForQuery and nothing was sent since. */
export const isReadyForQuery = (client: Pg.Client): boolean => internals(client).readyForQuery === true

export const transactionStatus = (client: Pg.Client): "I" | "T" | "E" | null => internals(client).getTransactionStatus()

/** The client's type parsers, for a submittable that wraps a Query pg did not create itself. */
export const typeParsers = (client: Pg.Client): unknown => internals(client)._types

/** Parameter type OIDs for pg's Parse message, see {@link withParameterTypes}. */
export type ParameterTypes = Array<number> & Pg.CustomTypesConfig

/**
 * A statement's parameter types, as pg takes them: pg sends a Query's `types` as the parameter
 * types of its Parse message, and asks the same object for the result's type parsers
 * (`getTypeParser`). So the OIDs travel as an array that also carries the parsers.
 */
export const withParameterTypes = (oids: ReadonlyArray<number>, parsers: Pg.CustomTypesConfig): ParameterTypes =>
  Object.assign([...oids], { getTypeParser: parsers.getTypeParser })

/** Forgets that `name` is prepared, so pg sends its Parse again. */
export const forgetParsed = (client: Pg.Client, name: string): void => {
  delete internals(client).connection.parsedStatements[name]
}

/** Forgets every prepared name (the server dropped them). */
export const forgetAllParsed = (client: Pg.Client): void => {
  internals(client).connection.parsedStatements = {}
}

/** Destroys a client's socket at once. This cannot hang. */
/**
 * The `ssl` setting a client connected with, when its connection is encrypted (pg swaps its socket for a TLS one
 * after the server's `S`); `undefined` for a plain connection.
 */
export const negotiatedSsl = (client: Pg.Client): Pg.ClientConfig["ssl"] | undefined => {
  const encrypted = (internals(client).connection.stream as { readonly encrypted?: boolean } | undefined)?.encrypted
  return encrypted === true ? (internals(client).ssl ?? true) : undefined
}

export const destroySocket = (client: Pg.Client): void => {
  try {
    ;(client as unknown as { connection?: Partial<Wire> }).connection?.stream?.destroy?.()
  } catch {
    // the socket is already gone
  }
}

let checked: string | undefined

/**
 * Verifies that the installed `pg` has every internal this module uses. Returns what is missing
 * (empty when nothing is); checked once per process.
 */
export const checkDriver = (): string => {
  checked ??= driverProblems()
  return checked
}

/** What `checkDriver` checks, every time it is called. */
export const driverProblems = (): string => {
  const missing: Array<string> = []
  const client = new Pg.Client({ host: "127.0.0.1", port: 1 }) as unknown as Record<string, unknown>
  // `readyForQuery` exists only once a client has connected: test/driver.test.ts covers it.
  if (client._types === undefined) missing.push("Client._types")
  if (typeof client.getTransactionStatus !== "function") missing.push("Client.getTransactionStatus()")
  if (!("ssl" in client)) missing.push("Client.ssl")
  const connection = client.connection as Record<string, unknown> | undefined
  if (connection === undefined) {
    missing.push("Client.connection")
  } else {
    for (const field of ["parsedStatements", "submittedNamedStatements"]) {
      if (typeof connection[field] !== "object" || connection[field] === null) missing.push(`Connection.${field}`)
    }
    for (const method of ["parse", "bind", "execute", "close", "sync", "on"]) {
      if (typeof connection[method] !== "function") missing.push(`Connection.${method}()`)
    }
  }
  const query = Pg.Query.prototype as unknown as Record<string, unknown>
  for (const method of [
    "submit",
    "handleRowDescription",
    "handleDataRow",
    "handleCommandComplete",
    "handleError",
    "handleReadyForQuery",
    "handleEmptyQuery",
    "handlePortalSuspended",
    "handleCopyInResponse",
    "handleCopyData"
  ]) {
    if (typeof query[method] !== "function") missing.push(`Query.${method}()`)
  }
  return missing.join(", ")
}
