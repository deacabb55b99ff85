/** The workloads, with their parameters in their names (`tx/size=8/clients=64/interrupt=0.5`). */
import type { OpKind } from "./driver.mjs"

export interface Workload {
  readonly name: string
  /** Which table of the report it belongs to. */
  readonly group: string
  readonly op: OpKind
  readonly poolSize: number
  readonly clients: number
  readonly interrupt: { readonly fraction: number; readonly maxDelayMs: number } | null
}

const shapes: ReadonlyArray<readonly [poolSize: number, clients: number]> = [
  [8, 1],
  [8, 8],
  [8, 64],
  [1, 1]
]

const make = (
  op: OpKind,
  poolSize: number,
  clients: number,
  interrupt: Workload["interrupt"],
  prefix: string = op
): Workload => {
  const params = [`size=${poolSize}`, `clients=${clients}`]
  if (interrupt) params.push(`interrupt=${interrupt.fraction}`)
  if (interrupt && interrupt.maxDelayMs !== 5) params.push(`window=${interrupt.maxDelayMs}ms`)
  const group = interrupt ? `${prefix}/interrupt=${interrupt.fraction}` : prefix
  return { name: `${prefix}/${params.join("/")}`, group, op, poolSize, clients, interrupt }
}

/** Every workload of a full run, in the order they run. */
export const allWorkloads: ReadonlyArray<Workload> = [
  ...shapes.map(([size, clients]) => make("select1", size, clients, null)),
  ...shapes.map(([size, clients]) => make("row", size, clients, null)),
  ...shapes.map(([size, clients]) => make("tx", size, clients, null)),
  ...[0.1, 0.5].flatMap((fraction) =>
    shapes.map(([size, clients]) => make("sleep", size, clients, { fraction, maxDelayMs: 5 }))
  ),
  ...[0.1, 0.5].flatMap((fraction) =>
    shapes.map(([size, clients]) => make("tx", size, clients, { fraction, maxDelayMs: 5 }))
  ),
  // The CPU-bound storm: short statements, half of them interrupted within the first millisecond.
  make("select1", 8, 64, { fraction: 0.5, maxDelayMs: 1 }, "storm")
]

/** The quick run (CI): one shape of each kind, enough to exercise every contender and the report. */
export const quickWorkloads: ReadonlyArray<Workload> = allWorkloads.filter((w) =>
  [
    "select1/size=8/clients=8",
    "row/size=8/clients=8",
    "tx/size=8/clients=8",
    "sleep/size=8/clients=8/interrupt=0.5",
    "tx/size=8/clients=64/interrupt=0.1",
    "storm/size=8/clients=64/interrupt=0.5/window=1ms"
  ].includes(w.name)
)

export const describeOp: Record<OpKind, string> = {
  select1: "`SELECT 1`",
  row: "a parameterised one-row select (`SELECT id, name, balance FROM bench_accounts WHERE id = $1`, random id of 1,000)",
  tx: "a transaction: BEGIN, `SELECT balance … WHERE id = $1`, `UPDATE … SET balance = balance + 1 WHERE id = $1`, COMMIT",
  sleep: "`SELECT pg_sleep(0.01)`"
}
