/** The report: a markdown table per workload, pool overhead, memory, and an SVG chart (no dependencies). */
import type { LoadResult } from "./driver.mjs"
import type { ServerView } from "./server.js"
import { median, minMax } from "./stats.js"
import type { Workload } from "./workloads.js"
import { describeOp } from "./workloads.js"

export interface ContenderInfo {
  readonly key: string
  readonly label: string
  readonly versions: Readonly<Record<string, string>>
  /** `process.version` of the contender's worker (absent in runs before the Effect 4 workers had a Node of their own). */
  readonly node?: string
}

export interface RunRecord {
  readonly workload: string
  readonly contender: string
  readonly round: number
  setupMs?: number
  teardownMs?: number
  check?: { readonly ok: boolean; readonly detail: string }
  result?: LoadResult & { readonly extra: unknown }
  server?: {
    readonly poolSize: number
    /** Right after the load stopped and in-flight operations ended, the pool still open. */
    readonly afterRun: ServerView
    /** Most backends seen by sampling every 200 ms during the run. */
    readonly maxDuringRun: number
    readonly maxIdleInTransactionDuringRun: number
    /** Right after the client was closed. */
    readonly atClose: ServerView
    /** After waiting up to 2 s for backends to go away. */
    readonly afterClose: ServerView
    readonly afterCloseWaitedMs: number
  }
  terminatedLeftovers?: number
  /**
   * Transactions the server counted in the database during the run (warm-up and drain included, and
   * the admin's own reads): compared with the operations the client counted, a check that the work
   * was really done on the server.
   */
  serverTransactions?: number
  error?: string
}

export interface BenchResults {
  meta: {
    readonly date: string
    readonly command: string
    readonly mode: "quick" | "full"
    readonly rounds: number
    readonly warmupMs: number
    readonly durationMs: number
    readonly only: ReadonlyArray<string>
    readonly git: string
    readonly node: string
    readonly os: string
    readonly cpus: string
    readonly loadavg: ReadonlyArray<number>
    readonly totalMemGB: number
    readonly server: {
      readonly kind: string
      readonly url: string
      readonly version: string
      readonly maxConnections: number
    }
    /** Only in runs from before the Effect 4 contenders moved to effect4/'s tree: how bench/effect4 was installed. */
    readonly effect4Install?: { readonly ok: boolean; readonly note: string; readonly ms: number }
    durationS: number
  }
  contenders: Array<ContenderInfo>
  workloads: ReadonlyArray<Workload>
  runs: Array<RunRecord>
  poolOverhead: unknown
  memory: Array<unknown>
}

// ---------------------------------------------------------------------------------------------
// Summaries

export interface ContenderSummary {
  readonly contender: ContenderInfo
  readonly runs: number
  readonly failedRuns: number
  readonly disagreements: ReadonlyArray<string>
  readonly ops: number | null
  readonly opsRange: readonly [number, number] | null
  readonly vsPg: number | null
  readonly vsSqlPg: number | null
  readonly vsSqlPg4: number | null
  readonly p50: number | null
  readonly p99: number | null
  readonly cpuUsPerOp: number | null
  /** Median over rounds of server-side transactions per operation the client completed. */
  readonly serverXactsPerOp: number | null
  readonly interruptP50: number | null
  readonly interruptP99: number | null
  readonly interruptMax: number | null
  readonly interruptsRequested: number
  readonly interrupted: number
  readonly completedDespiteInterrupt: number
  readonly failedAfterInterrupt: number
  readonly collateral: number
  readonly collateralSamples: ReadonlyArray<string>
  readonly stuck: number
  readonly server: {
    readonly worstAfterRun: ServerView | null
    readonly maxDuringRun: number
    readonly afterCloseMax: number
    readonly atCloseMax: number
    readonly overPool: boolean
    readonly idleInTransaction: number
  }
  readonly extras: ReadonlyArray<unknown>
  readonly errors: ReadonlyArray<string>
}

const num = (x: number | null | undefined): number => (x === null || x === undefined ? Number.NaN : x)
const sum = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0)

/** Median over rounds of the per-round ratio of `key`'s throughput to `ref`'s (rounds where both ran). */
const ratio = (runs: ReadonlyArray<RunRecord>, key: string, ref: string): number | null => {
  const byRound = new Map<number, { a?: number; b?: number }>()
  for (const r of runs) {
    if (r.result === undefined) continue
    const entry = byRound.get(r.round) ?? {}
    if (r.contender === key) entry.a = r.result.opsPerSec
    if (r.contender === ref) entry.b = r.result.opsPerSec
    byRound.set(r.round, entry)
  }
  const ratios = [...byRound.values()]
    .filter((e) => e.a !== undefined && e.b !== undefined && e.b > 0)
    .map((e) => e.a! / e.b!)
  return median(ratios)
}

export const summarize = (results: BenchResults, workload: string): Array<ContenderSummary> => {
  const runs = results.runs.filter((r) => r.workload === workload)
  return results.contenders.map((contender) => {
    const mine = runs.filter((r) => r.contender === contender.key)
    const ok = mine.filter((r) => r.result !== undefined)
    const res = ok.map((r) => r.result!)
    const servers = mine.flatMap((r) => (r.server ? [r.server] : []))
    const worst = servers.reduce<RunRecord["server"] | undefined>(
      (w, s) =>
        w === undefined ||
        s.afterRun.total > w.afterRun.total ||
        (s.afterRun.byState["idle in transaction"] ?? 0) > (w.afterRun.byState["idle in transaction"] ?? 0)
          ? s
          : w,
      undefined
    )
    const samples = new Map<string, number>()
    for (const r of res) {
      for (const s of [...r.collateral.samples, ...r.interrupts.failedAfterInterrupt.samples]) {
        samples.set(s.message, (samples.get(s.message) ?? 0) + s.count)
      }
    }
    const idleInTx = Math.max(0, ...servers.map((s) => s.afterRun.byState["idle in transaction"] ?? 0))
    return {
      contender,
      runs: mine.length,
      failedRuns: mine.length - ok.length,
      disagreements: mine.filter((r) => r.check && !r.check.ok).map((r) => r.check!.detail),
      ops: median(res.map((r) => r.opsPerSec)),
      opsRange: minMax(res.map((r) => r.opsPerSec)),
      vsPg: ratio(runs, contender.key, "pg"),
      vsSqlPg: ratio(runs, contender.key, "sqlpg"),
      vsSqlPg4: ratio(runs, contender.key, "effect4"),
      p50: median(res.map((r) => num(r.latencyMs.p50))),
      p99: median(res.map((r) => num(r.latencyMs.p99))),
      cpuUsPerOp: median(res.map((r) => num(r.cpu.usPerOp))),
      serverXactsPerOp: median(
        ok.map((r) =>
          r.serverTransactions !== undefined && r.result!.opsTotal > 0
            ? r.serverTransactions / r.result!.opsTotal
            : Number.NaN
        )
      ),
      interruptP50: median(res.map((r) => num(r.interrupts.latencyMs.p50))),
      interruptP99: median(res.map((r) => num(r.interrupts.latencyMs.p99))),
      interruptMax: res.some((r) => r.interrupts.latencyMs.max !== null)
        ? Math.max(...res.map((r) => r.interrupts.latencyMs.max ?? 0))
        : null,
      interruptsRequested: sum(res.map((r) => r.interrupts.requested)),
      interrupted: sum(res.map((r) => r.interrupts.interrupted)),
      completedDespiteInterrupt: sum(res.map((r) => r.interrupts.completedDespiteInterrupt)),
      failedAfterInterrupt: sum(res.map((r) => r.interrupts.failedAfterInterrupt.count)),
      collateral: sum(res.map((r) => r.collateral.count)),
      collateralSamples: [...samples].map(([m, n]) => `${n}× ${m}`),
      stuck: sum(res.map((r) => r.stuck)),
      server: {
        worstAfterRun: worst?.afterRun ?? null,
        maxDuringRun: Math.max(0, ...servers.map((s) => s.maxDuringRun)),
        afterCloseMax: Math.max(0, ...servers.map((s) => s.afterClose.total)),
        atCloseMax: Math.max(0, ...servers.map((s) => s.atClose.total)),
        overPool: servers.some((s) => s.afterRun.total > s.poolSize || s.maxDuringRun > s.poolSize),
        idleInTransaction: idleInTx
      },
      extras: res.map((r) => r.extra).filter((e) => e !== null && e !== undefined),
      errors: mine.flatMap((r) => (r.error ? [r.error.split("\n")[0]!] : []))
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Markdown

const fmt = (x: number | null, digits = 0): string =>
  x === null || !Number.isFinite(x)
    ? "–"
    : x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** Milliseconds with sensible precision. */
const ms = (x: number | null): string => {
  if (x === null || !Number.isFinite(x)) return "–"
  if (x < 0.1) return x.toFixed(3)
  if (x < 10) return x.toFixed(2)
  if (x < 100) return x.toFixed(1)
  return x.toFixed(0)
}

const times = (x: number | null): string => (x === null ? "–" : `${x.toFixed(2)}×`)

const views = (view: ServerView | null): string =>
  view === null
    ? "–"
    : view.total === 0
      ? "0"
      : Object.entries(view.byState)
          .map(([state, n]) => `${n} ${state}`)
          .join(", ")

const serverCell = (s: ContenderSummary): string => {
  const text = views(s.server.worstAfterRun)
  const warn = s.server.overPool || s.server.idleInTransaction > 0
  return warn ? `**⚠ ${text}**${s.server.overPool ? ` (max ${s.server.maxDuringRun} during)` : ""}` : text
}

const closeCell = (s: ContenderSummary): string =>
  s.server.afterCloseMax > 0
    ? `**⚠ ${s.server.afterCloseMax} after 2 s**`
    : s.server.atCloseMax > 0
      ? `0 (${s.server.atCloseMax} at close)`
      : "0"

const isAbandon = (s: ContenderSummary) => s.contender.key === "pg"

const workloadTable = (results: BenchResults, workload: Workload): string => {
  const rows = summarize(results, workload.name)
  const interrupting = workload.interrupt !== null
  // The reference of each edition: @effect/sql-pg 0.53 for Effect 3, @effect/sql-pg 4 for Effect 4.
  const withSqlPg4 = rows.some((s) => s.contender.key === "effect4" && s.runs > 0)
  const header = [
    "contender",
    "ops/s median (min–max)",
    "× pg",
    "× sql-pg 0.53",
    ...(withSqlPg4 ? ["× sql-pg 4"] : []),
    "p50 ms",
    "p99 ms",
    "CPU µs/op",
    "server xacts / op",
    ...(interrupting ? ["interrupt p50 / p99 / max ms", "interrupted / asked"] : []),
    "collateral failures",
    "server after run",
    "after close"
  ]
  const lines = [`| ${header.join(" | ")} |`, `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`]
  for (const s of rows) {
    if (s.runs === 0) continue
    const range = s.opsRange ? ` (${fmt(s.opsRange[0])}–${fmt(s.opsRange[1])})` : ""
    const interruptCells = interrupting
      ? [
          isAbandon(s)
            ? `${ms(s.interruptP50)} / ${ms(s.interruptP99)} / ${ms(s.interruptMax)} †`
            : `${ms(s.interruptP50)} / ${ms(s.interruptP99)} / ${ms(s.interruptMax)}`,
          `${fmt(s.interrupted)} / ${fmt(s.interruptsRequested)}`
        ]
      : []
    const collateral = s.collateral + s.stuck
    const cells = [
      `${s.contender.label}${s.failedRuns > 0 ? ` (${s.failedRuns} of ${s.runs} runs failed)` : ""}${s.disagreements.length > 0 ? " **(disagrees)**" : ""}`,
      `${fmt(s.ops)}${range}`,
      times(s.vsPg),
      times(s.vsSqlPg),
      ...(withSqlPg4 ? [times(s.vsSqlPg4)] : []),
      ms(s.p50),
      ms(s.p99),
      fmt(s.cpuUsPerOp),
      fmt(s.serverXactsPerOp, 2),
      ...interruptCells,
      collateral > 0 ? `**${fmt(s.collateral)}**${s.stuck > 0 ? ` + ${s.stuck} stuck` : ""}` : "0",
      serverCell(s),
      closeCell(s)
    ]
    lines.push(`| ${cells.join(" | ")} |`)
  }
  const notes: Array<string> = []
  for (const s of rows) {
    if (s.collateralSamples.length > 0) {
      notes.push(`- ${s.contender.label}: failures: ${s.collateralSamples.slice(0, 3).join("; ")}`)
    }
    if (s.completedDespiteInterrupt > 0 || s.failedAfterInterrupt > 0) {
      notes.push(
        `- ${s.contender.label}: after the interruption request ${s.completedDespiteInterrupt} operations completed anyway and ${s.failedAfterInterrupt} failed instead of being interrupted`
      )
    }
    if (interrupting && s.contender.key === "pg") {
      const extras = s.extras as ReadonlyArray<{
        abandoned: number
        abandonedThenCompleted: number
        abandonedThenFailed: number
        abandonedSettleMs: { p50: number | null; p99: number | null; max: number | null }
      }>
      const abandoned = sum(extras.map((e) => e.abandoned))
      if (abandoned > 0) {
        notes.push(
          `- † pg Pool cannot cancel: "interrupting" abandons the promise, so the caller is unblocked at once, but the statement runs on and keeps its connection. Of ${fmt(abandoned)} abandoned operations ${fmt(sum(extras.map((e) => e.abandonedThenCompleted)))} completed anyway${workload.op === "tx" ? " (the transaction committed)" : ""} and ${fmt(sum(extras.map((e) => e.abandonedThenFailed)))} failed; they settled p50 ${ms(median(extras.map((e) => num(e.abandonedSettleMs.p50))))} / p99 ${ms(median(extras.map((e) => num(e.abandonedSettleMs.p99))))} ms after the abandon.`
        )
      }
    }
    if (interrupting && s.contender.key === "postgresjs") {
      const outcomes = new Map<string, number>()
      for (const e of s.extras as ReadonlyArray<{ cancelledWith: Record<string, number> }>) {
        for (const [k, v] of Object.entries(e.cancelledWith ?? {})) outcomes.set(k, (outcomes.get(k) ?? 0) + v)
      }
      if (outcomes.size > 0) {
        notes.push(
          `- postgres.js: interrupted operations ended with ${[...outcomes].map(([k, v]) => `${k}: ${fmt(v)}`).join(", ")}`
        )
      }
    }
    if (s.stuck > 0) {
      notes.push(
        `- ${s.contender.label}: ${s.stuck} operations were still running when the load had stopped and the drain deadline passed (stuck)${s.ops === 0 ? "; nothing completed at all: the client deadlocked" : ""}`
      )
    }
    if (s.server.idleInTransaction > 0) {
      notes.push(
        `- ${s.contender.label}: the server showed ${s.server.idleInTransaction} backend(s) idle in transaction after the run`
      )
    }
    for (const d of new Set(s.disagreements)) notes.push(`- ${s.contender.label} disagrees: ${d}`)
    for (const e of new Set(s.errors)) notes.push(`- ${s.contender.label}: run failed: ${e}`)
  }
  return [
    `### \`${workload.name}\``,
    "",
    `${describeOp[workload.op]}; pool of ${workload.poolSize}, ${workload.clients} concurrent ${workload.clients === 1 ? "caller" : "callers"}${workload.interrupt ? `; ${workload.interrupt.fraction * 100}% of operations interrupted at a random moment 0–${workload.interrupt.maxDelayMs} ms after they start` : ""}.`,
    "",
    ...lines,
    ...(notes.length > 0 ? ["", ...notes] : [])
  ].join("\n")
}

interface PoolOverheadRow {
  readonly impl: string
  readonly fibers: number
  readonly opsPerSec: number | null
  readonly opsRange: readonly [number, number] | null
  readonly vsFreeList: number | null
  readonly p50Us: number | null
  readonly p99Us: number | null
  readonly note?: string
}

const poolOverheadSection = (poolOverhead: unknown): string => {
  if (poolOverhead === null || poolOverhead === undefined) return ""
  const data = poolOverhead as { rows?: ReadonlyArray<PoolOverheadRow>; meta?: Record<string, unknown>; error?: string }
  if (data.error) return `## Pool overhead (no database)\n\nFailed: ${data.error}\n`
  const lines = [
    "| implementation | fibers | acquire + use + release per s, median (min–max) | × free list | p50 µs | p99 µs |",
    "| --- | ---: | ---: | ---: | ---: | ---: |"
  ]
  for (const r of data.rows ?? []) {
    lines.push(
      `| ${r.impl} | ${r.fibers} | ${r.opsPerSec === null ? (r.note ?? "–") : `${fmt(r.opsPerSec)}${r.opsRange ? ` (${fmt(r.opsRange[0])}–${fmt(r.opsRange[1])})` : ""}`} | ${times(r.vsFreeList)} | ${fmt(r.p50Us, 1)} | ${fmt(r.p99Us, 1)} |`
    )
  }
  const meta = data.meta ?? {}
  return [
    "## Pool overhead (no database)",
    "",
    `Pool of ${meta.poolSize ?? 8}; each operation acquires a stub connection, holds it for one turn of the event loop (a stub "query" that completes on \`setImmediate\`), and releases it; ${meta.rounds ?? "?"} interleaved rounds of ${meta.durationMs ?? "?"} ms. See bench/README.md for what each implementation measures.`,
    "",
    ...lines
  ].join("\n")
}

interface MemoryRecord {
  readonly contender: string
  readonly error?: string
  readonly snapshots?: ReadonlyArray<{
    ops: number
    rssMB: number
    heapUsedMB: number
    seconds: number
    collateral?: number
  }>
}

const memorySection = (results: BenchResults): string => {
  if (results.memory.length === 0) return ""
  const label = (key: string) => results.contenders.find((c) => c.key === key)?.label ?? key
  const records = results.memory as ReadonlyArray<MemoryRecord>
  const checkpoints = records.find((r) => r.snapshots)?.snapshots?.slice(1) ?? []
  const [mid, last] = [checkpoints[0]?.ops ?? 0, checkpoints[checkpoints.length - 1]?.ops ?? 0]
  const lines = [
    `| contender | RSS / heap after warm-up (MB) | RSS / heap at ${fmt(mid)} ops | RSS / heap at ${fmt(last)} ops | RSS growth ${fmt(mid)} → ${fmt(last)} | time for ${fmt(last)} ops |`,
    "| --- | ---: | ---: | ---: | ---: | ---: |"
  ]
  for (const r of records) {
    if (r.error || !r.snapshots) {
      lines.push(`| ${label(r.contender)} | failed: ${(r.error ?? "").split("\n")[0]} | | | | |`)
      continue
    }
    const [w, a, b] = [r.snapshots[0]!, r.snapshots[1], r.snapshots[r.snapshots.length - 1]!]
    const growth = a ? (b.rssMB / a.rssMB - 1) * 100 : null
    const pair = (s: { rssMB: number; heapUsedMB: number } | undefined) =>
      s ? `${fmt(s.rssMB)} / ${fmt(s.heapUsedMB, 1)}` : "–"
    lines.push(
      `| ${label(r.contender)} | ${pair(w)} | ${pair(a)} | ${pair(b)} | ${growth === null ? "–" : `${growth >= 0 ? "+" : ""}${growth.toFixed(1)}% ${growth <= 10 ? "✓" : "**⚠ > 10%**"}`} | ${fmt(b.seconds - w.seconds, 1)} s |`
    )
  }
  return [
    "## Memory",
    "",
    `Each contender in a fresh process: \`SELECT 1\`, 8 callers, pool of 8; RSS and heap after a full GC (\`--expose-gc\`), after warm-up and at each checkpoint of completed operations.`,
    "",
    ...lines
  ].join("\n")
}

export const markdownReport = (results: BenchResults): string => {
  const m = results.meta
  // Per contender: the Effect 3 and Effect 4 contenders have different trees (and Nodes), so one merged list would lie.
  const versions = results.contenders.map(
    (c) =>
      `  - ${c.label}: ${Object.entries(c.versions)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}${c.node !== undefined ? `; Node ${c.node}` : ""}`
  )
  const head = [
    `# pg-warden benchmark: ${m.mode} run, ${m.date.slice(0, 10)}`,
    "",
    `- command: \`${m.command}\` (${m.durationS} s), git ${m.git}`,
    `- machine: ${m.cpus}, ${m.totalMemGB} GB, ${m.os}, load average at start ${m.loadavg.join(" ")}; Node ${m.node}${results.contenders.some((c) => c.node !== undefined) ? " (the parent process)" : ""}`,
    `- PostgreSQL ${m.server.version} (${m.server.kind}, max_connections ${m.server.maxConnections}) on the same machine`,
    results.contenders.some((c) => c.node !== undefined)
      ? "- versions, and the Node each contender's worker runs on:"
      : "- versions:",
    ...versions,
    `- method: ${m.rounds} rounds, contenders interleaved in each round (${results.contenders.map((c) => c.label).join(", ")}), each in its own process; per run a new pool, ${m.warmupMs} ms warm-up, ${m.durationMs} ms measured. Medians over rounds; "×" columns are medians of per-round ratios. Latencies are per operation including the wait for a connection. Numbers on a shared 2-core machine are noisy: compare ratios, not absolute values.`,
    ""
  ]
  const groups = new Map<string, Array<Workload>>()
  for (const w of results.workloads) groups.set(w.group, [...(groups.get(w.group) ?? []), w])
  const body: Array<string> = []
  for (const [group, list] of groups) {
    body.push(`## ${group}`, "")
    for (const w of list) body.push(workloadTable(results, w), "")
  }
  return [
    ...head,
    ...body,
    poolOverheadSection(results.poolOverhead),
    "",
    memorySection(results),
    "",
    "Columns: _collateral failures_ are failures of operations nobody interrupted (summed over rounds; _stuck_ = still running 2 s (quick) or 3 s (full) after the load stopped). _server after run_ is `pg_stat_activity` for the contender's `application_name` once the load stopped, pool still open (worst round; ⚠ when over the pool size or idle in transaction). _after close_ is the same after the client was closed (⚠ when backends remain 2 s later). _server xacts / op_ is the server's own count of transactions in the database (`pg_stat_database`) over the run divided by the operations the client completed: about 1 when every completed operation really ran on the server (approximate: warm-up included, plus a few admin queries; interrupted operations add their own). Interruption latency runs from `Fiber.interrupt` (postgres.js: `query.cancel()`) to the operation's end.",
    ""
  ].join("\n")
}

// ---------------------------------------------------------------------------------------------
// SVG chart

const palette = ["#2f6fdf", "#e0822b", "#6b6b6b", "#3a9a5b", "#9b59b6", "#c0392b"]

const escapeXml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/**
 * Small multiples: for each headline workload, one bar per contender, scaled to that workload's
 * largest value. Left: throughput (higher is better); right: interruption latency p99 (lower is better).
 */
export const svgChart = (results: BenchResults): string => {
  const contenders = results.contenders
  const headline = (list: ReadonlyArray<Workload>) => {
    const wide = list.filter((w) => w.clients === 64 && w.poolSize === 8)
    return (wide.length >= 3 ? wide : list).slice(0, 8)
  }
  const left = headline(results.workloads)
  const right = headline(results.workloads.filter((w) => w.interrupt !== null))
  const barH = 13
  const groupH = 22 + contenders.length * (barH + 3) + 12
  const colW = 470
  const labelW = 130
  const top = 70
  const height = top + Math.max(left.length, right.length, 1) * groupH + 20
  const width = colW * 2 + 20
  const out: Array<string> = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="11">`,
    `<title>pg-warden benchmark: throughput and interruption latency per contender</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">pg-warden benchmark (${results.meta.mode}, ${escapeXml(results.meta.date.slice(0, 10))}): medians of ${results.meta.rounds} interleaved rounds</text>`
  )
  const legendStep = Math.min(170, (width - 20) / Math.max(1, contenders.length))
  contenders.forEach((c, i) => {
    const x = 10 + i * legendStep
    out.push(
      `<rect x="${x}" y="32" width="12" height="12" fill="${palette[i % palette.length]}"/>`,
      `<text x="${x + 16}" y="42">${escapeXml(c.label)}</text>`
    )
  })
  const panel = (
    x0: number,
    title: string,
    list: ReadonlyArray<Workload>,
    value: (s: ContenderSummary) => number | null,
    unit: string,
    note: (s: ContenderSummary) => string
  ) => {
    out.push(`<text x="${x0}" y="${top - 8}" font-size="12" font-weight="bold">${escapeXml(title)}</text>`)
    list.forEach((w, gi) => {
      const y0 = top + gi * groupH
      const rows = summarize(results, w.name)
      const max = Math.max(0, ...rows.map((r) => value(r) ?? 0))
      out.push(`<text x="${x0}" y="${y0 + 14}" font-weight="bold">${escapeXml(w.name)}</text>`)
      rows.forEach((r, i) => {
        const v = value(r)
        const y = y0 + 22 + i * (barH + 3)
        const barMax = colW - labelW - 110
        const len = v === null || max <= 0 ? 0 : Math.max(1, (v / max) * barMax)
        out.push(
          `<text x="${x0 + labelW - 6}" y="${y + barH - 3}" text-anchor="end" fill="#333">${escapeXml(r.contender.label)}</text>`,
          `<rect x="${x0 + labelW}" y="${y}" width="${len.toFixed(1)}" height="${barH}" fill="${palette[i % palette.length]}"/>`,
          `<text x="${x0 + labelW + len + 4}" y="${y + barH - 3}" fill="#333">${v === null ? "no data" : `${unit === "ms" ? ms(v) : fmt(v)} ${unit}${note(r)}`}</text>`
        )
      })
    })
  }
  panel(
    10,
    "Throughput, ops/s (higher is better)",
    left,
    (s) => s.ops,
    "ops/s",
    () => ""
  )
  panel(
    colW + 10,
    "Interruption latency p99, ms (lower is better)",
    right,
    (s) => s.interruptP99,
    "ms",
    (s) => (s.contender.key === "pg" ? " (abandoned, not cancelled)" : "")
  )
  out.push("</svg>")
  return `${out.join("\n")}\n`
}
