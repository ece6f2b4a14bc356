/**
 * A plain-text table: a header row and left-aligned columns two spaces apart, each as wide as its
 * widest cell. No borders or colours, so it reads the same in a terminal, a log and a README.
 */
export function formatTable (header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i])).join('  ').trimEnd()
  return [header, ...rows].map(line).join('\n') + '\n'
}
