/**
 * Where a borrower took a connection, for leak detection: the current stack, without the frames of
 * pg-warden itself and of Effect's runtime, so that the first line is the caller's own code.
 *
 * @internal
 */

/** Frames of pg-warden (either edition, built or from source) and of the Effect runtime. */
const OWN_FRAMES =
  /[\\/](node_modules[\\/](effect|@effect|pg-warden[^\\/]*)[\\/]|src[\\/](core|internal)[\\/]|(effect4[\\/])?src[\\/]Warden[A-Za-z]*\.[jt]s|dist[\\/](effect4[\\/]src[\\/])?(core|internal)[\\/])/

/** At most this many frames are kept. */
const FRAMES = 10

export const callerStack = (): string => {
  const lines = (new Error().stack ?? "").split("\n").slice(1)
  const outside = lines.filter((line) => !OWN_FRAMES.test(line))
  return (outside.length > 0 ? outside : lines)
    .slice(0, FRAMES)
    .map((line) => line.trim())
    .join("\n")
}
