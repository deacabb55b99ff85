// The load driver, shared by every contender's worker process (Effect 3, Effect 4, promise-based):
// a closed loop of `clients` concurrent callers, each starting one operation, waiting for it to end,
// and starting the next one, for a fixed time (or a fixed number of operations).
//
// Plain JavaScript on purpose: the Effect 4 worker (bench/effect4/) imports it too, and it must not
// depend on any Effect version. Its types are in driver.d.mts.
//
// One operation ends in exactly one of:
// - "ok": it completed (latency recorded when it ended inside the measured window);
// - "interrupted": it ended because we asked (interruption latency = from the request to the end);
// - "error": it failed. Without an interruption request this is collateral damage.
import { performance } from "node:perf_hooks"

const now = () => performance.now()

/** mulberry32: a small seeded generator, so runs are repeatable in what they ask for. */
export const makeRng = (seed) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A growable array of doubles (latencies in ms): no boxing, one sort at the end. */
class Samples {
  constructor() {
    this.data = new Float64Array(1024)
    this.length = 0
  }
  push(value) {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2)
      next.set(this.data)
      this.data = next
    }
    this.data[this.length++] = value
  }
  summary() {
    if (this.length === 0) return { count: 0, p50: null, p99: null, max: null }
    const sorted = this.data.slice(0, this.length).sort()
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
    return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] }
  }
}

/** One line per failure: the message, the SQLSTATE, and the same for the driver error behind it. */
const describe = (error, depth = 0) => {
  if (error === undefined || error === null) return String(error)
  if (typeof error !== "object") return String(error).slice(0, 300)
  const code = typeof error.code === "string" ? ` [${error.code}]` : ""
  const message = "message" in error ? String(error.message) : String(error)
  const cause =
    depth < 2 && error.cause !== undefined && error.cause !== null ? ` <- ${describe(error.cause, depth + 1)}` : ""
  return (message + code + cause).slice(0, 300)
}

/** Keeps the first few distinct messages of a kind of failure, with their counts. */
class Failures {
  constructor() {
    this.count = 0
    this.samples = new Map()
  }
  add(error) {
    this.count++
    const key = describe(error)
    if (this.samples.has(key)) this.samples.set(key, this.samples.get(key) + 1)
    else if (this.samples.size < 5) this.samples.set(key, 1)
  }
  summary() {
    return { count: this.count, samples: [...this.samples].map(([message, count]) => ({ message, count })) }
  }
}

/**
 * Runs the load. `adapter.start(op, rng, onDone)` starts one operation and returns a handle whose
 * `interrupt()` asks for its interruption; `onDone(outcome, error)` must be called exactly once.
 */
export const runLoad = (adapter, spec) =>
  new Promise((resolve) => {
    const rng = makeRng(spec.seed ?? 1)
    const fraction = spec.interrupt?.fraction ?? 0
    const maxDelayMs = spec.interrupt?.maxDelayMs ?? 0
    const maxOps = spec.maxOps ?? Number.POSITIVE_INFINITY
    const drainTimeoutMs = spec.drainTimeoutMs ?? 15_000
    const started = now()
    const warmEnd = started + (spec.warmupMs ?? 0)
    const end = warmEnd + (spec.durationMs ?? Number.POSITIVE_INFINITY)

    const latency = new Samples()
    const interruptLatency = new Samples()
    const collateral = new Failures()
    const failedAfterInterrupt = new Failures()
    let ops = 0
    let opsTotal = 0
    let startedOps = 0
    let interruptsRequested = 0
    let interrupted = 0
    let completedDespiteInterrupt = 0
    let finishedBeforeInterrupt = 0
    let unexpectedInterrupts = 0
    let inFlight = 0
    let active = spec.clients
    let stopped = false
    let cpuAtStart = process.cpuUsage()
    let cpuAtEnd
    let measuredFrom = started
    let measuredTo
    let finished = false

    const inWindow = (t) => t >= warmEnd && t <= end

    // The measured window starts when the warm-up ends: CPU is sampled then and at the end.
    const warmTimer = spec.warmupMs
      ? setTimeout(() => {
          cpuAtStart = process.cpuUsage()
          measuredFrom = now()
        }, spec.warmupMs)
      : undefined
    const stop = () => {
      if (stopped) return
      stopped = true
      cpuAtEnd = process.cpuUsage(cpuAtStart)
      measuredTo = now()
    }
    const endTimer = Number.isFinite(end) ? setTimeout(() => onStop(), end - started) : undefined

    let drainTimer
    const finish = (stuck) => {
      if (finished) return
      finished = true
      clearTimeout(warmTimer)
      clearTimeout(endTimer)
      clearTimeout(drainTimer)
      stop()
      const seconds = Number.isFinite(end) ? (end - warmEnd) / 1000 : (measuredTo - measuredFrom) / 1000
      resolve({
        ops,
        opsTotal,
        started: startedOps,
        seconds,
        opsPerSec: seconds > 0 ? ops / seconds : 0,
        latencyMs: latency.summary(),
        interrupts: {
          requested: interruptsRequested,
          interrupted,
          completedDespiteInterrupt,
          finishedBeforeInterrupt,
          failedAfterInterrupt: failedAfterInterrupt.summary(),
          latencyMs: interruptLatency.summary()
        },
        collateral: collateral.summary(),
        unexpectedInterrupts,
        stuck,
        cpu: {
          userMs: cpuAtEnd.user / 1000,
          systemMs: cpuAtEnd.system / 1000,
          usPerOp: ops > 0 ? (cpuAtEnd.user + cpuAtEnd.system) / ops : null
        }
      })
    }

    // Once the load stops, operations still running get `drainTimeoutMs` to end; the ones that do
    // not are reported as stuck.
    const onStop = () => {
      stop()
      if (drainTimer === undefined) drainTimer = setTimeout(() => finish(inFlight), drainTimeoutMs)
    }

    const next = (depth) => {
      if (finished) return
      const t0 = now()
      if (stopped || t0 >= end || opsTotal >= maxOps) {
        onStop()
        active--
        if (active === 0) finish(0)
        return
      }
      startedOps++
      inFlight++
      const chosen = fraction > 0 && rng() < fraction
      const delay = chosen ? rng() * maxDelayMs : 0
      let interruptAt = 0
      let done = false
      let timer
      let sync = true
      const handle = adapter.start(spec.op, rng, (outcome, error) => {
        if (done) return
        done = true
        inFlight--
        const t1 = now()
        if (timer !== undefined) clearTimeout(timer)
        if (chosen && interruptAt === 0) finishedBeforeInterrupt++
        if (outcome === "ok") {
          opsTotal++
          if (interruptAt > 0) completedDespiteInterrupt++
          if (inWindow(t1)) {
            ops++
            latency.push(t1 - t0)
          }
        } else if (outcome === "interrupted") {
          if (interruptAt > 0) {
            interrupted++
            if (interruptAt >= warmEnd) interruptLatency.push(t1 - interruptAt)
          } else {
            unexpectedInterrupts++
            if (t1 >= warmEnd) collateral.add(new Error("interrupted without an interruption request"))
          }
        } else if (interruptAt > 0) {
          failedAfterInterrupt.add(error)
        } else if (t1 >= warmEnd) {
          collateral.add(error)
        }
        // A synchronous completion must not grow the stack without bound.
        if (sync || depth > 50) setImmediate(() => next(0))
        else next(depth + 1)
      })
      sync = false
      if (chosen && !done) {
        timer = setTimeout(() => {
          timer = undefined
          if (done) return
          interruptAt = now()
          interruptsRequested++
          handle.interrupt()
        }, delay)
      }
    }

    if (spec.clients <= 0) return finish(0)
    for (let i = 0; i < spec.clients; i++) next(0)
  })

/** Memory of this process, after a full GC when `--expose-gc` is on. */
export const memorySnapshot = () => {
  if (typeof globalThis.gc === "function") {
    globalThis.gc()
    globalThis.gc()
  }
  const m = process.memoryUsage()
  return { rssMB: m.rss / 2 ** 20, heapUsedMB: m.heapUsed / 2 ** 20, heapTotalMB: m.heapTotal / 2 ** 20 }
}
