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
 * Renders the status line for a view.
 *
 * @since 0.1.0
 * @category utils
 */
export const statusLine = (view: LiveView, paint: Paint, withBar: boolean): string => {
  const elapsed = performance.now() - view.startedAt
  const s = view.stats
  const server = view.server
  const parts = [
    paint("bold", view.label),
    withBar ? bar(elapsed / view.plannedMs, 20) : "",
    `${formatMs(elapsed)}`,
    `ok ${s.ok}`,
    `interrupted ${s.interrupted}`,
    s.hung > 0 ? paint("fail", `hung ${s.hung}`) : "hung 0",
    s.collateral > 0 ? paint("fail", `collateral ${s.collateral}`) : "collateral 0",
    paint("dim", "│"),
    `server: ${server.active} active`,
    server.idleInTransaction > 0 ? paint("warn", `${server.idleInTransaction} idle in tx`) : "0 idle in tx",
    `${server.idle} idle`
  ]
  return parts.filter((p) => p !== "").join("  ")
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
      let drawn = false
      let lastPlain = 0
      const clear = () => {
        if (tty && drawn) stream.write("\r\x1b[2K")
        drawn = false
      }
      const draw = () => {
        if (current === undefined) return clear()
        if (tty) {
          const width = Math.max(20, (stream.columns ?? 120) - 1)
          stream.write(`\r\x1b[2K${truncate(statusLine(current, paint, true), width)}`)
          drawn = true
        } else if (performance.now() - lastPlain >= PLAIN_EVERY_MS) {
          lastPlain = performance.now()
          stream.write(`  … ${statusLine(current, paint, false)}\n`)
        }
      }
      const timer = setInterval(draw, REDRAW_MS)
      const api: Live = {
        show: (view) => {
          current = view
          lastPlain = performance.now()
          if (view === undefined) clear()
        },
        log: (line) => {
          clear()
          stream.write(`${line}\n`)
          if (tty) draw()
        }
      }
      return { api, stop: () => (clearInterval(timer), clear()) }
    }),
    ({ stop }) => Effect.sync(stop)
  ).pipe(Effect.map(({ api }) => api))
