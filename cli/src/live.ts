/**
 * The demo's live progress: on a terminal one status line redrawn ten times a second (progress bar,
 * operations done, interrupted, hung, collateral failures, and the backends the server reports by
 * state); elsewhere (a pipe, a CI log) the same line printed every two seconds instead.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { bar, formatMs, type Paint, truncate } from "./report.js"
import type { RunStats } from "./scenarios.js"
import type { StateCounts } from "./server.js"

/**
 * What the status line shows.
 *
 * @since 0.1.0
 * @category models
 */
export interface LiveView {
  readonly label: string
  readonly startedAt: number
  readonly plannedMs: number
  readonly stats: RunStats
  server: StateCounts
}

/**
 * The live display.
 *
 * @since 0.1.0
 * @category models
 */
export interface Live {
  /** Shows `view` on the status line (or nothing when `undefined`). */
  readonly show: (view: LiveView | undefined) => void
  /** Prints a permanent line above the status line. */
  readonly log: (line: string) => void
}

const REDRAW_MS = 100
const PLAIN_EVERY_MS = 2_000

/**
 * Renders the status for a view: a headline (what runs, progress) and the numbers.
 *
 * @since 0.1.0
 * @category utils
 */
export const statusLines = (view: LiveView, paint: Paint, withBar: boolean): readonly [string, string] => {
  const elapsed = performance.now() - view.startedAt
  const s = view.stats
  const server = view.server
  const over = elapsed > view.plannedMs
  const head = [
    paint("bold", view.label),
    withBar ? paint(over ? "warn" : "info", bar(elapsed / view.plannedMs, 20)) : "",
    over ? paint("warn", `${formatMs(elapsed)} (planned ${formatMs(view.plannedMs)})`) : formatMs(elapsed)
  ]
  const numbers = [
    `ok ${s.ok}`,
    `interrupted ${s.interrupted}`,
    s.hung > 0 ? paint("fail", `hung ${s.hung}`) : "hung 0",
    s.collateral > 0 ? paint("fail", `collateral ${s.collateral}`) : "collateral 0",
    paint("dim", "│"),
    `server: ${server.active} active`,
    server.idleInTransaction > 0 ? paint("warn", `${server.idleInTransaction} idle in tx`) : "0 idle in tx",
    `${server.idle} idle`
  ]
  return [head.filter((p) => p !== "").join("  "), numbers.join("  ")]
}

/**
 * Starts the live display on `stream` for the scope's lifetime.
 *
 * @since 0.1.0
 * @category constructors
 */
export const live = (stream: NodeJS.WriteStream, paint: Paint): Effect.Effect<Live, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const tty = stream.isTTY === true
      let current: LiveView | undefined
      let drawn = 0
      let lastPlain = 0
      /** Moves back to the start of the block drawn last and clears it. */
      const erase = () => {
        if (!tty || drawn === 0) return ""
        const up = drawn > 1 ? `\x1b[${drawn - 1}A` : ""
        drawn = 0
        return `${up}\r\x1b[J`
      }
      const draw = () => {
        if (current === undefined) {
          const text = erase()
          if (text !== "") stream.write(text)
          return
        }
        if (tty) {
          const width = Math.max(20, (stream.columns || 100) - 1)
          const [head, numbers] = statusLines(current, paint, true)
          stream.write(`${erase()}${truncate(head, width)}\n${truncate(`      ${numbers}`, width)}`)
          drawn = 2
        } else if (performance.now() - lastPlain >= PLAIN_EVERY_MS) {
          lastPlain = performance.now()
          const [head, numbers] = statusLines(current, paint, false)
          stream.write(`  … ${head}  ${numbers}\n`)
        }
      }
      const timer = setInterval(draw, REDRAW_MS)
      const api: Live = {
        show: (view) => {
          current = view
          lastPlain = performance.now()
          if (view === undefined) draw()
        },
        log: (line) => {
          stream.write(`${erase()}${line}\n`)
          if (tty) draw()
        }
      }
      return {
        api,
        stop: () => {
          clearInterval(timer)
          current = undefined
          draw()
        }
      }
    }),
    ({ stop }) => Effect.sync(stop)
  ).pipe(Effect.map(({ api }) => api))
