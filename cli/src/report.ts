/**
 * Rendering for the command line: colours (only on a terminal, never with `NO_COLOR`), durations,
 * percentiles and plain-text tables whose columns line up with or without colour.
 *
 * @since 0.1.0
 */

/**
 * Whether to colour output written to `stream`.
 *
 * @since 0.1.0
 * @category utils
 */
export const colorFor = (stream: NodeJS.WriteStream): boolean =>
  stream.isTTY === true && process.env.NO_COLOR === undefined && process.env.TERM !== "dumb"

/**
 * @since 0.1.0
 * @category models
 */
export type Tone = "pass" | "warn" | "fail" | "dim" | "bold" | "info"

const CODES: Record<Tone, readonly [number, number]> = {
  pass: [32, 39],
  warn: [33, 39],
  fail: [31, 39],
  info: [36, 39],
  dim: [2, 22],
  bold: [1, 22]
}

/**
 * A painter: wraps text in ANSI colour codes when colour is on, returns it as is otherwise.
 *
 * @since 0.1.0
 * @category models
 */
export type Paint = (tone: Tone, text: string) => string

/**
 * @since 0.1.0
 * @category constructors
 */
export const painter =
  (color: boolean): Paint =>
  (tone, text) =>
    color ? `\x1b[${CODES[tone][0]}m${text}\x1b[${CODES[tone][1]}m` : text

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escape sequences is the point
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g

/**
 * The number of terminal columns `text` takes (ANSI codes take none).
 *
 * @since 0.1.0
 * @category utils
 */
export const visibleLength = (text: string): number => [...text.replace(ANSI, "")].length

/**
 * Pads `text` to `width` visible columns, on the right (`left` alignment) or on the left.
 *
 * @since 0.1.0
 * @category utils
 */
export const pad = (text: string, width: number, align: "left" | "right" = "left"): string => {
  const fill = " ".repeat(Math.max(0, width - visibleLength(text)))
  return align === "left" ? text + fill : fill + text
}

/**
 * Cuts `text` to `width` visible columns (used for the live line, which must not wrap).
 *
 * @since 0.1.0
 * @category utils
 */
export const truncate = (text: string, width: number): string => {
  if (visibleLength(text) <= width) return text
  let out = ""
  let seen = 0
  let i = 0
  while (i < text.length && seen < width - 1) {
    if (text[i] === "\x1b") {
      const end = text.indexOf("m", i)
      if (end === -1) break
      out += text.slice(i, end + 1)
      i = end + 1
      continue
    }
    const cp = text.codePointAt(i)!
    const ch = String.fromCodePoint(cp)
    out += ch
    i += ch.length
    seen++
  }
  return `${out}…\x1b[0m`
}

/**
 * A duration for people: `0.4 ms`, `12 ms`, `1.5 s`.
 *
 * @since 0.1.0
 * @category utils
 */
export const formatMs = (ms: number): string => {
  if (!Number.isFinite(ms)) return "–"
  if (ms < 10) return `${ms.toFixed(1)} ms`
  if (ms < 1_000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`
  return `${Math.round(ms / 1_000)} s`
}

/**
 * The nearest-rank percentile `p` (0–100) of `values`; `NaN` when there are none.
 *
 * @since 0.1.0
 * @category utils
 */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1]!
}

/**
 * A column of a table.
 *
 * @since 0.1.0
 * @category models
 */
export interface Column {
  readonly header: string
  readonly align?: "left" | "right"
}

/**
 * Renders a table with a header, a rule under it and optional rules between groups of rows
 * (a row that is `"rule"`).
 *
 * @since 0.1.0
 * @category utils
 */
export const table = (
  columns: ReadonlyArray<Column>,
  rows: ReadonlyArray<ReadonlyArray<string> | "rule">,
  paint: Paint
): Array<string> => {
  const widths = columns.map((c, i) =>
    Math.max(visibleLength(c.header), ...rows.map((r) => (r === "rule" ? 0 : visibleLength(r[i] ?? ""))))
  )
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, i) => pad(cell, widths[i]!, columns[i]!.align ?? "left"))
      .join("  ")
      .trimEnd()
  const rule = paint("dim", widths.map((w) => "─".repeat(w)).join("──"))
  return [paint("bold", line(columns.map((c) => c.header))), rule, ...rows.map((r) => (r === "rule" ? rule : line(r)))]
}

/**
 * A progress bar of `width` cells for a fraction between 0 and 1.
 *
 * @since 0.1.0
 * @category utils
 */
export const bar = (fraction: number, width: number): string => {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0))
  const eighths = Math.round(f * width * 8)
  const full = Math.floor(eighths / 8)
  const partial = eighths % 8
  const partials = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"]
  const body = "█".repeat(full) + (full < width ? partials[partial]! : "")
  return `▕${body}${" ".repeat(Math.max(0, width - visibleLength(body)))}▏`
}

/**
 * `n thing` or `n things`.
 *
 * @since 0.1.0
 * @category utils
 */
export const plural = (n: number, singular: string, pluralForm = `${singular}s`): string =>
  `${n} ${n === 1 ? singular : pluralForm}`
