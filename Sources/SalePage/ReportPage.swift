/// The sale report as one self-contained HTML page: the charts of the timeline as inline SVG, the final tables and
/// the audit. No script, no external stylesheet, font or image: it opens anywhere, offline.
public struct ReportPage: Sendable {
    public struct Table: Sendable {
        public var title: String
        public var header: [String]
        public var rows: [[String]]

        public init(title: String, header: [String], rows: [[String]]) {
            self.title = title
            self.header = header
            self.rows = rows
        }
    }

    public var title: String
    /// Lines under the title (the sale's setup).
    public var summary: [String]
    public var timeline: Timeline
    public var tables: [Table]
    public var auditClean: Bool
    /// What the audit checked, line by line.
    public var audit: [String]

    public init(title: String, summary: [String], timeline: Timeline, tables: [Table], auditClean: Bool, audit: [String]) {
        self.title = title
        self.summary = summary
        self.timeline = timeline
        self.tables = tables
        self.auditClean = auditClean
        self.audit = audit
    }

    /// The page's charts, in order: attempts/s by outcome, remaining stock, latency, per-edge throughput, quota left.
    public var charts: [LineChart] {
        let range = timeline.timeRange
        let markers = timeline.events.map { LineChart.Marker(x: $0.t, label: $0.label, kind: $0.kind.rawValue) }
        func chart(_ id: String, _ title: String, _ unit: String, _ values: (Timeline.Sample) -> [String: Double]) -> LineChart {
            LineChart(
                id: id, title: title, unit: unit,
                series: timeline.series(values).map { LineChart.Series(name: $0.name, points: $0.points) },
                markers: markers, xRange: range)
        }
        return [
            chart("attempts", "Attempts per second by outcome", "attempts/s") { $0.attemptsPerSecond },
            chart("stock", "Remaining stock per product", "units") { $0.remaining.mapValues(Double.init) },
            chart("latency", "Buyers' latency", "ms") { sample in
                var values: [String: Double] = [:]
                if let p50 = sample.latencyP50Ms { values["p50"] = p50 }
                if let p99 = sample.latencyP99Ms { values["p99"] = p99 }
                return values
            },
            chart("edges", "Attempts per second at each edge", "attempts/s") { $0.edgeAttemptsPerSecond },
            chart("quota", "Quota left on each edge (all products)", "units") { $0.edgeQuotaLeft.mapValues(Double.init) },
        ]
    }

    public func html() -> String {
        var out: [String] = []
        out.append("<!DOCTYPE html>")
        out.append(#"<html lang="en"><head><meta charset="utf-8">"#)
        out.append(#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
        out.append("<title>\(HTML.escape(title))</title>")
        out.append("<style>\(Self.style)</style>")
        out.append("</head><body>")
        out.append("<h1>\(HTML.escape(title))</h1>")
        out.append(#"<p class="audit \#(auditClean ? "clean" : "failed")">audit: \#(auditClean ? "clean" : "FAILED")</p>"#)
        out.append("<ul class=\"summary\">" + summary.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul>")
        for chart in charts {
            out.append(#"<section class="chart-box"><h2>\#(HTML.escape(chart.title))</h2>"#)
            out.append(chart.svg())
            out.append("</section>")
        }
        if !timeline.events.isEmpty {
            out.append("<section><h2>Events</h2><table class=\"events\"><thead><tr><th>at</th><th>kind</th><th>what</th></tr></thead><tbody>")
            for event in timeline.events {
                out.append("<tr><td>\(String(format: "%.2f s", event.t))</td><td>\(event.kind.rawValue)</td><td>\(HTML.escape(event.label))</td></tr>")
            }
            out.append("</tbody></table></section>")
        }
        for table in tables {
            out.append("<section><h2>\(HTML.escape(table.title))</h2><table><thead><tr>")
            out.append(table.header.map { "<th>\(HTML.escape($0))</th>" }.joined())
            out.append("</tr></thead><tbody>")
            for row in table.rows {
                out.append("<tr>" + row.map { "<td>\(HTML.escape($0))</td>" }.joined() + "</tr>")
            }
            out.append("</tbody></table></section>")
        }
        out.append("<section><h2>Audit</h2><ul class=\"audit-lines\">" + audit.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul></section>")
        out.append("</body></html>")
        return out.joined(separator: "\n") + "\n"
    }

    /// System fonts only: nothing to fetch.
    static let style = """
        body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
        h1{font-size:22px;margin:0 0 8px}h2{font-size:15px;margin:18px 0 6px}
        .audit{font-weight:bold;padding:4px 8px;display:inline-block;border-radius:4px}
        .audit.clean{background:#dff0d8;color:#2b542c}.audit.failed{background:#f2dede;color:#a94442}
        .summary{margin:8px 0;padding-left:18px}
        .chart-box{background:#fff;border:1px solid #ddd;padding:8px;margin:10px 0;display:inline-block;vertical-align:top}
        table{border-collapse:collapse;font-size:13px;background:#fff}
        th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f0f0f0}
        td:first-child,th:first-child,.events td:last-child,.events th:last-child{text-align:left}
        """
}
