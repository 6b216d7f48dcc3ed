import Foundation

/// A line chart drawn as inline SVG: series of points over a shared x axis (seconds of the sale), a y axis from 0
/// (or the data's minimum, when negative) to a round number above the data, tick labels on both, a legend, and
/// vertical marks for events. Pure: the same chart gives the same SVG, and no script or font is needed to show it.
///
/// Each element a test looks for carries a class: `series` (one `path` per series, `data-name`), `axis x` and
/// `axis y` (with `data-min` and `data-max`, the axis' range in data units), `marker` (`data-t`, `data-kind`).
public struct LineChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        public var points: [Point]

        public init(name: String, points: [Point]) {
            self.name = name
            self.points = points
        }
    }

    public struct Marker: Sendable {
        public var x: Double
        public var label: String
        public var kind: String

        public init(x: Double, label: String, kind: String) {
            self.x = x
            self.label = label
            self.kind = kind
        }
    }

    public var id: String
    public var title: String
    public var unit: String
    public var series: [Series]
    public var markers: [Marker]
    /// The x axis' range; nil: the points'.
    public var xRange: ClosedRange<Double>?
    public var width = 760.0
    public var height = 280.0

    public init(
        id: String, title: String, unit: String, series: [Series], markers: [Marker] = [], xRange: ClosedRange<Double>? = nil
    ) {
        self.id = id
        self.title = title
        self.unit = unit
        self.series = series
        self.markers = markers
        self.xRange = xRange
    }

    /// Series colours, in order (distinct for the usual 2-8 series; then they repeat).
    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    /// The plot area inside the SVG: left margin for the y labels, bottom for the x labels, top for the legend.
    var plot: (left: Double, top: Double, right: Double, bottom: Double) {
        (left: 64, top: 34, right: width - 16, bottom: height - 34)
    }

    /// The y axis' range: from 0 (or below, for negative data) to a round value at or above the largest point.
    public var yRange: ClosedRange<Double> {
        let values = series.flatMap { $0.points.map(\.y) }.filter(\.isFinite)
        let low = min(0, values.min() ?? 0)
        let high = max(values.max() ?? 1, low + 1)
        let ticks = Ticks.nice(low: low, high: high, count: 5)
        return (ticks.first ?? low)...(ticks.last ?? high)
    }

    /// The x axis' range: `xRange`, else from the first point to the last.
    public var xAxisRange: ClosedRange<Double> {
        if let xRange { return xRange }
        let xs = series.flatMap { $0.points.map(\.x) }
        guard let low = xs.min(), let high = xs.max() else { return 0...1 }
        return low...max(high, low + 0.001)
    }

    /// Data to SVG coordinates.
    func position(_ point: Point, x: ClosedRange<Double>, y: ClosedRange<Double>) -> (x: Double, y: Double) {
        let area = plot
        let fx = (point.x - x.lowerBound) / (x.upperBound - x.lowerBound)
        let fy = (point.y - y.lowerBound) / (y.upperBound - y.lowerBound)
        return (area.left + fx * (area.right - area.left), area.bottom - fy * (area.bottom - area.top))
    }

    /// The `d` attribute of a series: a polyline through its points (clamped to the plot), empty without points.
    func path(_ points: [Point], x: ClosedRange<Double>, y: ClosedRange<Double>) -> String {
        points.enumerated().map { index, point in
            let clamped = Point(x: min(max(point.x, x.lowerBound), x.upperBound), y: min(max(point.y, y.lowerBound), y.upperBound))
            let p = position(clamped, x: x, y: y)
            return "\(index == 0 ? "M" : "L")\(Self.coordinate(p.x)),\(Self.coordinate(p.y))"
        }.joined(separator: " ")
    }

    public func svg() -> String {
        let x = xAxisRange, y = yRange, area = plot
        var out: [String] = []
        out.append(##"<svg xmlns="http://www.w3.org/2000/svg" id="\##(HTML.escape(id))" class="chart" viewBox="0 0 \##(Self.coordinate(width)) \##(Self.coordinate(height))" width="\##(Self.coordinate(width))" height="\##(Self.coordinate(height))" role="img" aria-label="\##(HTML.escape(title))">"##)
        out.append(##"<title>\##(HTML.escape(title))</title>"##)
        out.append(##"<rect x="0" y="0" width="\##(Self.coordinate(width))" height="\##(Self.coordinate(height))" fill="#ffffff"/>"##)

        // Axes: grid lines and labels at round values.
        out.append(##"<g class="axis y" data-min="\##(Self.number(y.lowerBound))" data-max="\##(Self.number(y.upperBound))">"##)
        for tick in Ticks.nice(low: y.lowerBound, high: y.upperBound, count: 5) {
            let p = position(Point(x: x.lowerBound, y: tick), x: x, y: y)
            out.append(##"<line x1="\##(Self.coordinate(area.left))" y1="\##(Self.coordinate(p.y))" x2="\##(Self.coordinate(area.right))" y2="\##(Self.coordinate(p.y))" stroke="#e4e4e4"/>"##)
            out.append(##"<text x="\##(Self.coordinate(area.left - 6))" y="\##(Self.coordinate(p.y + 4))" text-anchor="end" font-size="11" fill="#444">\##(Self.label(tick))</text>"##)
        }
        out.append(##"<text x="12" y="\##(Self.coordinate(area.top - 12))" font-size="11" fill="#444">\##(HTML.escape(unit))</text>"##)
        out.append("</g>")
        out.append(##"<g class="axis x" data-min="\##(Self.number(x.lowerBound))" data-max="\##(Self.number(x.upperBound))">"##)
        for tick in Ticks.nice(low: x.lowerBound, high: x.upperBound, count: 8) where tick >= x.lowerBound && tick <= x.upperBound {
            let p = position(Point(x: tick, y: y.lowerBound), x: x, y: y)
            out.append(##"<line x1="\##(Self.coordinate(p.x))" y1="\##(Self.coordinate(area.bottom))" x2="\##(Self.coordinate(p.x))" y2="\##(Self.coordinate(area.bottom + 4))" stroke="#444"/>"##)
            out.append(##"<text x="\##(Self.coordinate(p.x))" y="\##(Self.coordinate(area.bottom + 16))" text-anchor="middle" font-size="11" fill="#444">\##(Self.label(tick))</text>"##)
        }
        out.append(##"<text x="\##(Self.coordinate(area.right))" y="\##(Self.coordinate(height - 4))" text-anchor="end" font-size="11" fill="#444">seconds</text>"##)
        out.append(##"<line x1="\##(Self.coordinate(area.left))" y1="\##(Self.coordinate(area.bottom))" x2="\##(Self.coordinate(area.right))" y2="\##(Self.coordinate(area.bottom))" stroke="#444"/>"##)
        out.append(##"<line x1="\##(Self.coordinate(area.left))" y1="\##(Self.coordinate(area.top))" x2="\##(Self.coordinate(area.left))" y2="\##(Self.coordinate(area.bottom))" stroke="#444"/>"##)
        out.append("</g>")

        // Event marks: a dashed vertical line and a short label, each label on a row of its own where it would
        // overlap another (`labelRows`), so that close events stay legible.
        let shown = markers.filter { x.contains($0.x) }
        let rows = labelRows(shown, x: x, y: y)
        for (index, marker) in shown.enumerated() {
            let p = position(Point(x: marker.x, y: y.upperBound), x: x, y: y)
            let color = marker.kind == "fault" ? "#c00000" : marker.kind == "action" ? "#6a3d9a" : "#777777"
            out.append(##"<g class="marker" data-t="\##(Self.number(marker.x))" data-kind="\##(HTML.escape(marker.kind))">"##)
            out.append(##"<line x1="\##(Self.coordinate(p.x))" y1="\##(Self.coordinate(area.top))" x2="\##(Self.coordinate(p.x))" y2="\##(Self.coordinate(area.bottom))" stroke="\##(color)" stroke-dasharray="4 3"/>"##)
            // Near the right edge the label goes to the left of its line, so it is not cut off.
            let leftward = p.x > area.right - Double(marker.label.count) * 6
            let labelX = leftward ? p.x - 3 : p.x + 3
            out.append(##"<text x="\##(Self.coordinate(labelX))" y="\##(Self.coordinate(area.top + 11 + Double(rows[index]) * 12))" text-anchor="\##(leftward ? "end" : "start")" font-size="10" fill="\##(color)">\##(HTML.escape(marker.label))</text>"##)
            out.append("</g>")
        }

        // The series, then their legend along the top.
        for (index, line) in series.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            out.append(##"<path class="series" data-name="\##(HTML.escape(line.name))" data-points="\##(line.points.count)" d="\##(path(line.points, x: x, y: y))" fill="none" stroke="\##(color)" stroke-width="1.8" stroke-linejoin="round"/>"##)
        }
        var legendX = area.left
        for (index, line) in series.enumerated() {
            let color = Self.palette[index % Self.palette.count]
            out.append(##"<rect x="\##(Self.coordinate(legendX))" y="8" width="12" height="4" fill="\##(color)"/>"##)
            out.append(##"<text x="\##(Self.coordinate(legendX + 16))" y="14" font-size="11" fill="#222">\##(HTML.escape(line.name))</text>"##)
            legendX += 28 + Double(line.name.count) * 6.5
        }
        out.append("</svg>")
        return out.joined(separator: "\n")
    }

    /// The text row (0 at the top) of each marker's label: the first row where it overlaps no label placed before it,
    /// in the order of their x; the least crowded row when all are taken. A label is about 6 px per character.
    func labelRows(_ markers: [Marker], x: ClosedRange<Double>, y: ClosedRange<Double>) -> [Int] {
        let rowCount = 6
        var ends = [Double](repeating: -.infinity, count: rowCount)
        var rows = [Int](repeating: 0, count: markers.count)
        for index in markers.indices.sorted(by: { markers[$0].x < markers[$1].x }) {
            let start = position(Point(x: markers[index].x, y: y.upperBound), x: x, y: y).x
            let row = ends.firstIndex { $0 < start } ?? ends.indices.min { ends[$0] < ends[$1] }!
            rows[index] = row
            ends[row] = start + 6 + Double(markers[index].label.count) * 6
        }
        return rows
    }

    /// An SVG coordinate: one decimal is finer than a pixel.
    static func coordinate(_ value: Double) -> String { String(format: "%.1f", value) }

    /// A data value in an attribute: as short as it is exact to 6 significant digits.
    static func number(_ value: Double) -> String { String(format: "%g", value) }

    /// A tick label: 1.5, 20, 1,200, 25k, 1.2M.
    static func label(_ value: Double) -> String {
        let magnitude = abs(value)
        if magnitude >= 1_000_000 { return trimmed(value / 1_000_000) + "M" }
        if magnitude >= 10_000 { return trimmed(value / 1_000) + "k" }
        if value == value.rounded() { return Int(value).formatted() }
        return trimmed(value)
    }

    private static func trimmed(_ value: Double) -> String {
        var text = String(format: "%.2f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}

/// Round axis values ("nice numbers": steps of 1, 2 or 5 times a power of ten).
public enum Ticks {
    /// About `count` round values covering `low...high`: the first at or below `low`, the last at or above `high`.
    public static func nice(low: Double, high: Double, count: Int) -> [Double] {
        guard low.isFinite, high.isFinite, count > 0 else { return [0, 1] }
        let span = max(high - low, 1e-9)
        let rough = span / Double(count)
        let power = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= rough } ?? 10 * power
        let first = floor(low / step)
        var ticks: [Double] = []
        // Each tick from its index, not by adding steps, and rounded to the step's precision: 0.3, not 0.30000000000000004.
        for index in 0...(count * 3) {
            let raw = (first + Double(index)) * step
            ticks.append(step < 1 ? (raw * 1e9).rounded() / 1e9 : raw)
            if ticks.last! >= high { break }
        }
        return ticks
    }
}

/// Escaping for text and attribute values in HTML and SVG.
public enum HTML {
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
