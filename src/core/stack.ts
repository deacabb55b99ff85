/**
 * Where a borrower took a connection, for leak detection. Capturing is cheap (an `Error` object, its
 * frames recorded by the engine); formatting the stack is not (with source maps it costs hundreds of
 * microseconds), so it happens only when a holder is reported, and then without the frames of
 * pg-warden itself and of Effect's runtime, so that the first line is the caller's own code.
 *
 * @internal
 */

/** The place a connection was asked for, formatted only when reported. */
export interface StackSite {
  readonly error: Error
}

/** Frames of pg-warden (either edition, built or from source) and of the Effect runtime. */
const OWN_FRAMES =
  /[\\/](node_modules[\\/](effect|@effect|pg-warden[^\\/]*)[\\/]|src[\\/](core|internal)[\\/]|(effect4[\\/])?src[\\/]Warden[A-Za-z]*\.[jt]s|dist[\\/](effect4[\\/]src[\\/])?(core|internal)[\\/])/

/** At most this many frames are kept. */
const FRAMES = 10

/** Records where the caller is now. */
export const callerStack = (): StackSite => ({ error: new Error("acquired here") })

/** The recorded place as text: the caller's frames first. */
export const formatStack = (site: StackSite): string => {
  const lines = (site.error.stack ?? "").split("\n").slice(1)
  const outside = lines.filter((line) => !OWN_FRAMES.test(line))
  return (outside.length > 0 ? outside : lines)
    .slice(0, FRAMES)
    .map((line) => line.trim())
    .join("\n")
}
