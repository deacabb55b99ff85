/**
 * The pool's cancel channel: one control connection, outside the pool's slots, that cancels a
 * session's statement with `pg_cancel_backend`.
 *
 * A protocol CancelRequest opens a new connection each time, and PostgreSQL starts a helper process
 * for it: on a loaded two-core machine that is about 12 ms before the backend is signalled, plus
 * server CPU per cancel. Over an open connection, `pg_cancel_backend` signals the backend in one
 * round trip (about 1.5 ms). It is only used for sessions whose backend PID was verified at connect
 * (`pg_backend_pid()` equals the PID of the protocol's BackendKeyData, which is not the case behind
 * PgBouncer), and only for a backend still showing the pool's application name; otherwise, and
 * whenever the channel is not open or fails, the session falls back to the protocol CancelRequest.
 *
 * The channel opens on first need (the first cancel uses the protocol path) and closes with the
 * pool, within the terminate deadline.
 *
 * @internal
 */
import type * as Pg from "pg"
import { type CancelOutcome, controlClient, controlNameOf, destroyClient, endClient, type Negotiated } from "./wire.js"

const CANCEL_SQL = "SELECT pg_cancel_backend(pid) AS ok FROM pg_stat_activity WHERE pid = $1 AND application_name = $2"

interface CancelJob {
  readonly pid: number
  readonly applicationName: string
  settled: boolean
  timer: ReturnType<typeof setTimeout> | undefined
  readonly resolve: (outcome: CancelOutcome) => void
}

export class CancelChannel {
  private client: Pg.Client | undefined = undefined
  /** A connection being opened. */
  private pending: Pg.Client | undefined = undefined
  private closed = false

  constructor(
    private readonly config: Pg.ClientConfig,
    poolApplicationName: string,
    private readonly connectTimeoutMs: number,
    private readonly negotiated?: Negotiated
  ) {
    // Named after the pool, so the server shows whose channel it is.
    this.applicationName = controlNameOf(poolApplicationName)
  }

  readonly applicationName: string

  /**
   * Cancels the statement of backend `pid` (of `applicationName`) within `timeoutMs`. `undefined`
   * when the channel cannot be used now: take the protocol path. The channel runs one statement at
   * a time (pg's own queue is never used): cancels asked for meanwhile wait their turn, within their
   * own deadline.
   */
  cancel(pid: number, applicationName: string, timeoutMs: number): Promise<CancelOutcome> | undefined {
    if (this.closed) return undefined
    const client = this.client
    if (client === undefined) {
      this.open()
      return undefined
    }
    return new Promise((resolve) => {
      const job: CancelJob = { pid, applicationName, settled: false, timer: undefined, resolve }
      job.timer = setTimeout(() => {
        // A cancel that did not answer in time: the channel cannot be trusted any more if it was
        // this one's turn; one still waiting just gives up its place.
        if (this.running === job) {
          this.running = undefined
          this.drop(client)
        }
        this.settle(job, "timeout")
      }, timeoutMs)
      this.waiting.push(job)
      this.next()
    })
  }

  private running: CancelJob | undefined = undefined
  private readonly waiting: Array<CancelJob> = []

  private settle(job: CancelJob, outcome: CancelOutcome): void {
    if (job.settled) return
    job.settled = true
    clearTimeout(job.timer)
    job.resolve(outcome)
    if (this.running === job) {
      this.running = undefined
      this.next()
    }
  }

  /** Sends the next waiting cancel, if the channel is free. */
  private next(): void {
    const client = this.client
    while (this.running === undefined && this.waiting.length > 0) {
      const job = this.waiting.shift()!
      if (job.settled) continue
      if (client === undefined) {
        this.settle(job, "failed")
        continue
      }
      this.running = job
      try {
        client.query(CANCEL_SQL, [job.pid, job.applicationName], (error, result) => {
          if (error) {
            this.drop(client)
            this.settle(job, "failed")
          } else {
            this.settle(job, result.rows[0]?.ok === true ? "delivered" : "failed")
          }
        })
      } catch {
        this.drop(client)
        this.settle(job, "failed")
      }
    }
  }

  private open(): void {
    if (this.pending !== undefined || this.closed) return
    const client = controlClient(this.config, this.applicationName, this.connectTimeoutMs, this.negotiated)
    this.pending = client
    client.on("error", () => this.drop(client))
    client.on("end", () => this.drop(client))
    const timer = setTimeout(() => this.drop(client), this.connectTimeoutMs)
    client.connect((error) => {
      clearTimeout(timer)
      if (this.pending === client) this.pending = undefined
      if (error || this.closed) {
        destroyClient(client)
        return
      }
      this.client = client
    })
  }

  private drop(client: Pg.Client): void {
    if (this.client === client) {
      this.client = undefined
      this.failAll()
    }
    if (this.pending === client) this.pending = undefined
    destroyClient(client)
  }

  /** Whatever ran or waited on the channel fails now, so its session takes the protocol path at once. */
  private failAll(): void {
    const running = this.running
    this.running = undefined
    if (running !== undefined) this.settle(running, "failed")
    for (const job of this.waiting.splice(0)) this.settle(job, "failed")
  }

  /** Closes the channel (Terminate message), destroying it if that takes longer than `timeoutMs`. */
  close(timeoutMs: number): Promise<void> {
    this.closed = true
    if (this.pending !== undefined) this.drop(this.pending)
    const client = this.client
    this.client = undefined
    this.failAll()
    return client === undefined ? Promise.resolve() : endClient(client, timeoutMs)
  }
}
