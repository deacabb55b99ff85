/** Types of driver.mjs (plain JavaScript so that the Effect 4 worker can share it). */

export type OpKind = "select1" | "row" | "tx" | "sleep"

export type Outcome = "ok" | "interrupted" | "error"

export interface OpHandle {
  /** Asks for the operation's interruption; the operation still reports its end through `onDone`. */
  interrupt(): void
}

export interface LoadAdapter {
  start(op: OpKind, rng: () => number, onDone: (outcome: Outcome, error?: unknown) => void): OpHandle
}

export interface LoadSpec {
  readonly op: OpKind
  readonly clients: number
  readonly warmupMs?: number
  readonly durationMs?: number
  /** Stop after this many completed operations (memory runs). */
  readonly maxOps?: number
  readonly interrupt?: { readonly fraction: number; readonly maxDelayMs: number } | null
  readonly seed?: number
  readonly drainTimeoutMs?: number
}

export interface Percentiles {
  readonly count: number
  readonly p50: number | null
  readonly p99: number | null
  readonly max: number | null
}

export interface FailureSummary {
  readonly count: number
  readonly samples: ReadonlyArray<{ readonly message: string; readonly count: number }>
}

export interface LoadResult {
  /** Operations completed inside the measured window. */
  readonly ops: number
  /** Operations completed, warm-up and drain included. */
  readonly opsTotal: number
  readonly started: number
  readonly seconds: number
  readonly opsPerSec: number
  readonly latencyMs: Percentiles
  readonly interrupts: {
    readonly requested: number
    readonly interrupted: number
    readonly completedDespiteInterrupt: number
    readonly finishedBeforeInterrupt: number
    readonly failedAfterInterrupt: FailureSummary
    readonly latencyMs: Percentiles
  }
  /** Failures of operations nobody asked to interrupt. */
  readonly collateral: FailureSummary
  readonly unexpectedInterrupts: number
  /** Operations still running `drainTimeoutMs` after the load stopped. */
  readonly stuck: number
  readonly cpu: { readonly userMs: number; readonly systemMs: number; readonly usPerOp: number | null }
}

export interface MemorySnapshot {
  readonly rssMB: number
  readonly heapUsedMB: number
  readonly heapTotalMB: number
}

export declare const makeRng: (seed: number) => () => number
export declare const runLoad: (adapter: LoadAdapter, spec: LoadSpec) => Promise<LoadResult>
export declare const memorySnapshot: () => MemorySnapshot
