// Just enough of the Prometheus text format for the fleet panel.

/** [{name, labels, value}] for every sample line. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2];
    }
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function matching(samples, name, labels) {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
}

/** The first sample's value, or null when the metric is absent. */
export function sample(samples, name, labels = {}) {
  const found = matching(samples, name, labels);
  return found.length ? found[0].value : null;
}

export function total(samples, name, labels = {}) {
  return matching(samples, name, labels).reduce((sum, s) => sum + s.value, 0);
}
