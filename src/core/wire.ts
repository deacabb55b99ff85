/**
 * Out-of-band operations on a backend: the protocol CancelRequest and a forced
 * `pg_terminate_backend` over a short-lived control connection.
 *
 * Both run on fresh sockets, never on a pool slot, and both are bounded by a
 * deadline: they are called from release finalizers, which must not wait forever.
 *
 * @internal
 */
import * as Net from "node:net"
import * as Tls from "node:tls"
import * as Pg from "pg"
import { destroySocket, negotiatedSsl } from "./driver.js"

/**
 * Where a session's backend can be reached: a TCP address or a Unix socket folder, and the TLS options when the
 * session itself uses TLS (a CancelRequest then goes over TLS too: its secret must not travel in the clear).
 */
export interface Endpoint {
  readonly host: string
  readonly port: number
  readonly tls?: Tls.ConnectionOptions | undefined
}

/**
 * The TLS options a CancelRequest for `client`'s backend needs: those of its own connection (as `pg` hands its `ssl`
 * setting to `tls.connect`), or `undefined` when the client is not connected over TLS.
 */
export const cancelTlsOf = (client: Pg.Client): Tls.ConnectionOptions | undefined => {
  const ssl = negotiatedSsl(client)
  if (ssl === undefined) return undefined
  const options: Tls.ConnectionOptions = ssl === true || ssl === false ? {} : { ...ssl }
  if (Net.isIP(client.host) === 0 && !client.host.startsWith("/")) options.servername = client.host
  return options
}

/** The name control connections use, so audits can tell them apart from pool backends. */
export const CONTROL_APPLICATION_NAME = "pg-warden-control"

const CANCEL_REQUEST_CODE = 80877102
const SSL_REQUEST_CODE = 80877103

/**
 * Outcome of a CancelRequest: `delivered` means the server accepted the request and
 * closed the socket, which it does after signalling the backend.
 */
export type CancelOutcome = "delivered" | "failed" | "timeout"

/**
 * Sends a protocol CancelRequest for `(pid, secretKey)` on a fresh socket and waits until the server closes it (at
 * which point the backend has been signalled). With `endpoint.tls`, it is sent as PostgreSQL expects over TLS: an
 * SSLRequest first, the TLS handshake once the server answers `S`, then the CancelRequest inside it; a server that
 * answers anything else gets no CancelRequest at all (`failed`), so the secret never goes out in the clear.
 */
export const sendCancelRequest = (
  endpoint: Endpoint,
  pid: number,
  secretKey: number,
  timeoutMs: number
): Promise<CancelOutcome> =>
  new Promise((resolve) => {
    let settled = false
    let secure: Tls.TLSSocket | undefined
    const socket = endpoint.host.startsWith("/")
      ? Net.connect(`${endpoint.host}/.s.PGSQL.${endpoint.port}`)
      : Net.connect(endpoint.port, endpoint.host)
    const finish = (outcome: CancelOutcome) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      secure?.destroy()
      socket.destroy()
      resolve(outcome)
    }
    const timer = setTimeout(() => finish("timeout"), timeoutMs)
    const cancelPacket = () => {
      const packet = Buffer.allocUnsafe(16)
      packet.writeInt32BE(16, 0)
      packet.writeInt32BE(CANCEL_REQUEST_CODE, 4)
      packet.writeInt32BE(pid, 8)
      packet.writeInt32BE(secretKey, 12)
      return packet
    }
    socket.setNoDelay(true)
    socket.on("error", () => finish("failed"))
    const tlsOptions = endpoint.tls
    if (tlsOptions === undefined) {
      socket.on("connect", () => socket.write(cancelPacket()))
      // The server answers nothing; it closes the connection once the backend was signalled.
      socket.on("close", () => finish("delivered"))
      socket.resume()
      return
    }
    socket.on("connect", () => {
      const request = Buffer.allocUnsafe(8)
      request.writeInt32BE(8, 0)
      request.writeInt32BE(SSL_REQUEST_CODE, 4)
      socket.write(request)
    })
    socket.once("data", (answer: Buffer) => {
      if (answer.length !== 1 || answer[0] !== 0x53) return finish("failed")
      socket.removeAllListeners("close")
      const tls = Tls.connect({ ...tlsOptions, socket })
      secure = tls
      let sent = false
      tls.on("error", () => finish(sent ? "delivered" : "failed"))
      tls.once("secureConnect", () => {
        sent = true
        tls.write(cancelPacket())
      })
      tls.on("close", () => finish(sent ? "delivered" : "failed"))
      tls.resume()
    })
    socket.on("close", () => finish("failed"))
  })

/** Outcome of an out-of-band termination. */
export type TerminateOutcome = "terminated" | "gone" | "failed" | "timeout"

/**
 * A client for a control connection: never a pool slot, named so audits can tell it from the pool's
 * sessions, with keepalive, and with an 'error' listener so a driver error can never become an
 * uncaught exception (the caller's own listener decides what it means).
 */
export const controlClient = (
  config: Pg.ClientConfig,
  applicationName: string,
  connectTimeoutMs: number,
  negotiated?: Negotiated
): Pg.Client => {
  const client = new Pg.Client({
    ...config,
    ...(negotiated?.ssl !== undefined ? { ssl: negotiated.ssl } : {}),
    application_name: applicationName,
    connectionTimeoutMillis: connectTimeoutMs,
    keepAlive: true
  })
  client.on("error", () => {})
  return client
}

/**
 * A cap on the short-lived control connections a pool has open at one time (out-of-band terminates and audits), so
 * that what the pool opens on the server stays within its stated budget (README, "Connection budget"). Slots are
 * granted in order; a waiter gives up at its own deadline.
 */
export class ControlSlots {
  private used = 0
  private readonly waiting: Array<() => void> = []

  constructor(readonly limit: number) {}

  /** Calls `start` once a slot is free (at once when one is); returns the function that gives the slot back or leaves the queue. */
  take(start: () => void): () => void {
    let state: "waiting" | "holding" | "done" = "waiting"
    const grant = () => {
      state = "holding"
      this.used++
      start()
    }
    if (this.used < this.limit) grant()
    else this.waiting.push(grant)
    return () => {
      if (state === "holding") {
        this.used--
        this.waiting.shift()?.()
      } else if (state === "waiting") {
        const index = this.waiting.indexOf(grant)
        if (index >= 0) this.waiting.splice(index, 1)
      }
      state = "done"
    }
  }

  /** Control connections open now (for tests). */
  get inUse(): number {
    return this.used
  }
}

/**
 * What the pool's sessions found out about TLS when `sslmode` is `prefer` or `allow` (which way the server took),
 * for its control connections to connect the same way. Written by the sessions, read by the control connections.
 */
export interface Negotiated {
  ssl?: Pg.ClientConfig["ssl"] | undefined
}

/** Where a control statement runs: its slots (none: no cap) and the name the server shows for its connection. */
export interface ControlTarget {
  readonly slots?: ControlSlots | undefined
  readonly applicationName?: string | undefined
  readonly negotiated?: Negotiated | undefined
}

/** The name of a pool's control connections: `pg-warden-control:<pool's name>`, so the server shows whose they are. */
export const controlNameOf = (poolApplicationName: string): string =>
  `${CONTROL_APPLICATION_NAME}:${poolApplicationName}`.slice(0, 63)

/** What one control statement came to. */
export type ControlOutcome =
  | { readonly _tag: "done"; readonly result: Pg.QueryResult }
  | { readonly _tag: "failed"; readonly error: unknown; readonly connecting: boolean }
  | { readonly _tag: "timeout" }

/**
 * One statement over a short-lived control connection: wait for a slot (when `target` has slots), connect, run,
 * close, all within `timeoutMs`. Returns a function that abandons it (the socket is destroyed at once).
 */
export const controlStatement = (
  config: Pg.ClientConfig,
  timeoutMs: number,
  text: string,
  values: ReadonlyArray<unknown>,
  onDone: (outcome: ControlOutcome) => void,
  target: ControlTarget = {}
): (() => void) => {
  let settled = false
  let client: Pg.Client | undefined
  let giveBack = () => {}
  const finish = (outcome: ControlOutcome | undefined) => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    if (client !== undefined) destroyClient(client)
    giveBack()
    if (outcome !== undefined) onDone(outcome)
  }
  const timer = setTimeout(() => finish({ _tag: "timeout" }), timeoutMs)
  const start = () => {
    if (settled) return
    const opened = controlClient(
      config,
      target.applicationName ?? CONTROL_APPLICATION_NAME,
      timeoutMs,
      target.negotiated
    )
    client = opened
    opened.on("error", (error) => finish({ _tag: "failed", error, connecting: false }))
    opened.connect((error) => {
      if (error) return finish({ _tag: "failed", error, connecting: true })
      opened.query(text, values as Array<unknown>, (error: unknown, result: Pg.QueryResult) =>
        finish(error ? { _tag: "failed", error, connecting: false } : { _tag: "done", result })
      )
    })
  }
  if (target.slots === undefined) start()
  else giveBack = target.slots.take(start)
  return () => finish(undefined)
}

const TERMINATE_SQL =
  "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE pid = $1 AND application_name = $2"

/**
 * Ends a backend from the server side over a separate, short-lived control connection.
 * Used when the session's own socket cannot be trusted to tell the server (a statement is
 * still running, or the network may be partitioned). The pid is matched together with the
 * application name so a recycled pid of an unrelated session is never hit.
 */
export const terminateBackend = (
  config: Pg.ClientConfig,
  pid: number,
  applicationName: string,
  timeoutMs: number,
  target: ControlTarget = {}
): Promise<TerminateOutcome> =>
  new Promise((resolve) => {
    controlStatement(
      config,
      timeoutMs,
      TERMINATE_SQL,
      [pid, applicationName],
      (outcome) => {
        if (outcome._tag !== "done") return resolve(outcome._tag)
        resolve(outcome.result.rows[0]?.ok === true ? "terminated" : "gone")
      },
      target
    )
  })

/** Destroys a client's socket at once. This cannot hang. */
export const destroyClient = destroySocket

/** Ends a client gracefully (Terminate message), destroying its socket if that takes longer than `timeoutMs`. */
export const endClient = (client: Pg.Client, timeoutMs: number): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => {
      destroyClient(client)
      resolve()
    }, timeoutMs)
    client.end(() => {
      clearTimeout(timer)
      resolve()
    })
  })
