/**
 * An in-memory PostgreSQL "server" for one connection, handed to `pg` through its `stream` option
 * (which `WardenClient` and `PgClient` accept as `stream`): it accepts the startup packet without a
 * password, reports a backend key, and answers simple-protocol queries: `SELECT 1` with one row,
 * BEGIN / COMMIT / ROLLBACK with the matching transaction status, anything else with an empty
 * result. Every answer is sent on the next turn of the event loop, like a reply from a socket.
 *
 * This measures a client's own path (pool, session bookkeeping, protocol) with no database at all.
 */
import { Duplex } from "node:stream"

const message = (type: string, body: Buffer): Buffer => {
  const head = Buffer.allocUnsafe(5)
  head.write(type, 0, "latin1")
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}
const int32 = (n: number) => {
  const b = Buffer.allocUnsafe(4)
  b.writeInt32BE(n, 0)
  return b
}
const int16 = (n: number) => {
  const b = Buffer.allocUnsafe(2)
  b.writeInt16BE(n, 0)
  return b
}
const cstring = (s: string) => Buffer.from(`${s}\0`, "utf8")

const ready = (status: "I" | "T" | "E") => message("Z", Buffer.from(status, "latin1"))

const ONE_ROW = Buffer.concat([
  // RowDescription: one int4 column "one"
  message("T", Buffer.concat([int16(1), cstring("one"), int32(0), int16(0), int32(23), int16(4), int32(-1), int16(0)])),
  // DataRow: "1"
  message("D", Buffer.concat([int16(1), int32(1), Buffer.from("1")])),
  message("C", cstring("SELECT 1"))
])

let nextPid = 1_000_000

export class StubPgStream extends Duplex {
  private started = false
  private pending: Buffer = Buffer.alloc(0)
  private status: "I" | "T" | "E" = "I"
  private readonly pid = nextPid++

  setNoDelay(): this {
    return this
  }
  setKeepAlive(): this {
    return this
  }
  connect(): this {
    setImmediate(() => this.emit("connect"))
    return this
  }
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    this.parse()
    callback()
  }
  override _final(callback: (error?: Error | null) => void): void {
    this.push(null)
    callback()
  }

  private reply(data: Buffer): void {
    setImmediate(() => {
      if (!this.destroyed) this.push(data)
    })
  }

  private parse(): void {
    for (;;) {
      if (!this.started) {
        if (this.pending.length < 4) return
        const length = this.pending.readInt32BE(0)
        if (this.pending.length < length) return
        this.pending = this.pending.subarray(length)
        this.started = true
        this.reply(
          Buffer.concat([
            message("R", int32(0)),
            message("S", Buffer.concat([cstring("server_version"), cstring("17.0")])),
            message("S", Buffer.concat([cstring("client_encoding"), cstring("UTF8")])),
            message("K", Buffer.concat([int32(this.pid), int32(42)])),
            ready("I")
          ])
        )
        continue
      }
      if (this.pending.length < 5) return
      const type = String.fromCharCode(this.pending[0]!)
      const length = this.pending.readInt32BE(1)
      if (this.pending.length < length + 1) return
      const body = this.pending.subarray(5, length + 1)
      this.pending = this.pending.subarray(length + 1)
      if (type === "X") {
        this.push(null)
        return
      }
      if (type === "Q") this.query(body.toString("utf8", 0, body.length - 1))
    }
  }

  private query(text: string): void {
    const verb = text.trim().split(/\s+/)[0]?.toUpperCase() ?? ""
    if (verb === "BEGIN") {
      this.status = "T"
      this.reply(Buffer.concat([message("C", cstring("BEGIN")), ready("T")]))
    } else if (verb === "COMMIT" || verb === "ROLLBACK") {
      this.status = "I"
      this.reply(Buffer.concat([message("C", cstring(verb)), ready("I")]))
    } else if (/^select\s+1\b/i.test(text.trim())) {
      this.reply(Buffer.concat([ONE_ROW, ready(this.status)]))
    } else {
      this.reply(Buffer.concat([message("C", cstring(verb || "EMPTY")), ready(this.status)]))
    }
  }
}
