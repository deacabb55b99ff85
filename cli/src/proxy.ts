/**
 * Fault-injecting TCP proxy (node:net), one upstream connection per accepted client: the demo's network
 * blackhole, and the tests' faults (test/support/proxy.ts).
 *
 * Modes (switchable at any time, apply to every connection):
 * - `pass`: bytes flow both ways.
 * - `delay`: every chunk is forwarded `delayMs` after it arrived; order is preserved per direction.
 * - `blackhole`: bytes are dropped in both directions (never buffered), sockets stay open, new connections
 *   are accepted (and dialled upstream) but nothing passes. An end/close seen during the blackhole is
 *   held back and propagated to the other side only once traffic flows again.
 *
 * Socket errors never throw: every socket has an error listener.
 */
import * as net from "node:net"

export type ProxyMode = "pass" | "delay" | "blackhole"

export interface ProxyModeOptions {
  /** Used by `delay`; default 100 ms. */
  readonly delayMs?: number
}

export interface FaultProxy {
  readonly port: number
  readonly host: string
  /** Same connection URL with `host:port` replaced by the proxy's. */
  rewrite(url: string): string
  readonly mode: ProxyMode
  setMode(mode: ProxyMode, options?: ProxyModeOptions): void
  /**
   * From now on, an end or close coming from the server reaches the client `ms` later (bytes still
   * flow at once). 0 turns it off. Models a server that closes a socket late, as PostgreSQL does
   * with a CancelRequest's socket (closed when its helper process exits).
   */
  holdServerClose(ms: number): void
  /** Abruptly destroys every open client/upstream socket pair (TCP RST where possible). */
  reset(): void
  /** Number of open client/upstream pairs. */
  connections(): number
  /**
   * The first 8 bytes each client sent on each connection so far, in order of arrival (fewer when it sent fewer):
   * what kind of PostgreSQL message opened it (a startup packet, an SSLRequest, a CancelRequest).
   */
  openings(): ReadonlyArray<Buffer>
  /** Destroys everything and closes the listening socket. */
  close(): Promise<void>
}

interface Queued {
  readonly chunk: Buffer
  readonly due: number
}

/** One direction of a pair: bytes read from `from` are written to `to`. */
interface Leg {
  readonly from: net.Socket
  readonly to: net.Socket
  readonly queue: Array<Queued>
  timer: NodeJS.Timeout | undefined
  /** `from` sent FIN. */
  fromEnded: boolean
  /** `from` is fully closed; `fromError` when that was abrupt. */
  fromClosed: boolean
  fromError: boolean
  /** What has already been propagated to `to`. */
  endSent: boolean
  closeSent: boolean
  /** Server-to-client leg: when its held end/close may go (0 = not held yet). */
  releaseAt: number
  readonly fromServer: boolean
}

interface Pair {
  readonly client: net.Socket
  readonly upstream: net.Socket
  readonly up: Leg
  readonly down: Leg
}

const noop = () => {}

const hardDestroy = (socket: net.Socket): void => {
  if (socket.destroyed) return
  try {
    // RST instead of FIN (Node >= 16.17 / 18.3); throws for sockets without a TCP handle.
    socket.resetAndDestroy()
  } catch {
    socket.destroy()
  }
}

const makeLeg = (from: net.Socket, to: net.Socket, fromServer: boolean): Leg => ({
  from,
  to,
  queue: [],
  timer: undefined,
  fromEnded: false,
  fromClosed: false,
  fromError: false,
  endSent: false,
  closeSent: false,
  releaseAt: 0,
  fromServer
})

export const startProxy = async (target: { host: string; port: number }): Promise<FaultProxy> => {
  const host = "127.0.0.1"
  const pairs = new Set<Pair>()
  const openings: Array<{ bytes: Buffer }> = []
  let mode: ProxyMode = "pass"
  let delayMs = 100
  let holdCloseMs = 0
  let closed = false

  const write = (leg: Leg, chunk: Buffer): void => {
    if (leg.to.destroyed || !leg.to.writable) return
    leg.to.write(chunk)
  }

  /** Propagates a held-back end/close from `from` to `to`, once the queue is drained and traffic flows. */
  const propagate = (leg: Leg): void => {
    if (mode === "blackhole" || leg.queue.length > 0) return
    if (leg.fromServer && holdCloseMs > 0 && (leg.fromEnded || leg.fromClosed)) {
      if (leg.releaseAt === 0) {
        leg.releaseAt = Date.now() + holdCloseMs
        setTimeout(() => propagate(leg), holdCloseMs)
        return
      }
      if (Date.now() < leg.releaseAt) return
    }
    if (leg.fromClosed && !leg.closeSent) {
      leg.closeSent = true
      leg.endSent = true
      if (leg.fromError) {
        hardDestroy(leg.to)
      } else if (!leg.to.destroyed) {
        // `from` is gone, so nothing can flow back: finish writing, then close.
        leg.to.end(() => leg.to.destroy())
      }
    } else if (leg.fromEnded && !leg.endSent) {
      leg.endSent = true
      if (!leg.to.destroyed) leg.to.end()
    }
  }

  const flush = (leg: Leg): void => {
    if (leg.timer !== undefined) {
      clearTimeout(leg.timer)
      leg.timer = undefined
    }
    const now = Date.now()
    // Head-of-line: a chunk never overtakes an earlier one, whatever their due times.
    while (leg.queue.length > 0 && leg.queue[0]!.due <= now) {
      const { chunk } = leg.queue.shift()!
      if (mode !== "blackhole") write(leg, chunk)
    }
    if (leg.queue.length > 0) {
      leg.timer = setTimeout(() => flush(leg), Math.max(1, leg.queue[0]!.due - now))
    } else {
      propagate(leg)
    }
  }

  const onData = (leg: Leg, chunk: Buffer): void => {
    switch (mode) {
      case "blackhole":
        return
      case "delay":
        leg.queue.push({ chunk, due: Date.now() + delayMs })
        if (leg.timer === undefined) flush(leg)
        return
      case "pass":
        if (leg.queue.length === 0) write(leg, chunk)
        else leg.queue.push({ chunk, due: 0 })
    }
  }

  const wire = (pair: Pair, leg: Leg): void => {
    leg.from.on("data", (chunk: Buffer) => onData(leg, chunk))
    leg.from.on("end", () => {
      leg.fromEnded = true
      propagate(leg)
    })
    leg.from.on("close", (hadError) => {
      leg.fromClosed = true
      leg.fromError = hadError
      propagate(leg)
      if (pair.client.destroyed && pair.upstream.destroyed) {
        for (const l of [pair.up, pair.down]) {
          if (l.timer !== undefined) clearTimeout(l.timer)
          l.timer = undefined
          l.queue.length = 0
        }
        pairs.delete(pair)
      }
    })
  }

  // allowHalfOpen on both sides: we decide when (and whether) a FIN is passed on.
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    // Errors surface again as 'close' with hadError = true, which is what we act on.
    client.on("error", noop)
    if (closed) {
      hardDestroy(client)
      return
    }
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
    upstream.on("error", noop)
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const pair: Pair = { client, upstream, up: makeLeg(client, upstream, false), down: makeLeg(upstream, client, true) }
    pairs.add(pair)
    const opening = { bytes: Buffer.alloc(0) }
    openings.push(opening)
    const record = (chunk: Buffer) => {
      opening.bytes = Buffer.concat([opening.bytes, chunk]).subarray(0, 8)
      if (opening.bytes.length >= 8) client.off("data", record)
    }
    client.on("data", record)
    wire(pair, pair.up)
    wire(pair, pair.down)
  })
  server.on("error", noop)

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, host, () => {
      server.off("error", reject)
      resolve()
    })
  })
  const address = server.address()
  if (typeof address !== "object" || address === null) throw new Error("proxy: no listening address")
  const port = address.port

  const destroyAll = (): void => {
    for (const pair of [...pairs]) {
      for (const leg of [pair.up, pair.down]) {
        if (leg.timer !== undefined) clearTimeout(leg.timer)
        leg.timer = undefined
        leg.queue.length = 0
        // Nothing left to propagate: both sockets go down now.
        leg.endSent = true
        leg.closeSent = true
      }
      hardDestroy(pair.client)
      hardDestroy(pair.upstream)
      pairs.delete(pair)
    }
  }

  return {
    port,
    host,
    get mode() {
      return mode
    },
    openings: () => openings.map((o) => o.bytes),
    rewrite(url: string): string {
      const parsed = new URL(url)
      parsed.hostname = host
      parsed.port = String(port)
      return parsed.toString()
    },
    setMode(next: ProxyMode, options: ProxyModeOptions = {}): void {
      if (options.delayMs !== undefined) delayMs = options.delayMs
      mode = next
      for (const pair of pairs) {
        for (const leg of [pair.up, pair.down]) {
          if (mode === "blackhole") {
            // Bytes in flight are lost too.
            leg.queue.length = 0
            if (leg.timer !== undefined) clearTimeout(leg.timer)
            leg.timer = undefined
          } else {
            flush(leg)
          }
        }
      }
    },
    holdServerClose(ms: number): void {
      holdCloseMs = ms
    },
    reset: destroyAll,
    connections: () => pairs.size,
    close: async () => {
      closed = true
      destroyAll()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
