/** Small statistics helpers for the report. */

export const median = (values: ReadonlyArray<number>): number | null => {
  const xs = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (xs.length === 0) return null
  const mid = Math.floor(xs.length / 2)
  return xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2
}

export const minMax = (values: ReadonlyArray<number>): readonly [number, number] | null => {
  const xs = values.filter((x) => Number.isFinite(x))
  if (xs.length === 0) return null
  return [Math.min(...xs), Math.max(...xs)]
}

export interface Percentiles {
  readonly count: number
  readonly p50: number | null
  readonly p99: number | null
  readonly max: number | null
}

/** Nearest-rank percentiles of a list of samples. */
export const percentiles = (values: ReadonlyArray<number>): Percentiles => {
  if (values.length === 0) return { count: 0, p50: null, p99: null, max: null }
  const xs = [...values].sort((a, b) => a - b)
  const at = (q: number) => xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))]!
  return { count: xs.length, p50: at(0.5), p99: at(0.99), max: xs[xs.length - 1]! }
}
