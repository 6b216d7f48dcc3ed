import Foundation
@testable import SalePage
import Testing

@Suite struct LineChartTests {
    @Test func ticksAreRoundAndCoverTheRange() {
        #expect(Ticks.nice(low: 0, high: 1000, count: 5) == [0, 200, 400, 600, 800, 1000])
        #expect(Ticks.nice(low: 0, high: 7.3, count: 8) == [0, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Ticks.nice(low: 0, high: 0.3, count: 3) == [0, 0.1, 0.2, 0.3])
        let big = Ticks.nice(low: 0, high: 123_456, count: 5)
        #expect(big.first == 0 && big.last! >= 123_456 && big.count <= 7, "\(big)")
        let negative = Ticks.nice(low: -3, high: 12, count: 5)
        #expect(negative.first! <= -3 && negative.last! >= 12, "\(negative)")
        #expect(Ticks.nice(low: .nan, high: 1, count: 5) == [0, 1])
    }

    @Test func yAxisRunsFromZeroToARoundValueAboveTheData() {
        let chart = LineChart(id: "c", title: "t", unit: "u", series: [.init(name: "a", points: [Point(x: 0, y: 3), Point(x: 1, y: 870)])])
        #expect(chart.yRange == 0...1000)
        #expect(chart.xAxisRange == 0...1)
        let empty = LineChart(id: "e", title: "t", unit: "u", series: [])
        #expect(empty.yRange.lowerBound == 0 && empty.yRange.upperBound >= 1)
    }

    @Test func svgHasOnePathPerSeriesWithEveryPointAndTheAxesRanges() throws {
        let points = (0...10).map { Point(x: Double($0) * 0.2, y: Double($0 * $0)) }
        let chart = LineChart(
            id: "stock", title: "Stock <p1>", unit: "units",
            series: [.init(name: "p1", points: points), .init(name: "p&2", points: [])],
            markers: [.init(x: 1, label: "p1 sold out", kind: "phase"), .init(x: 99, label: "outside", kind: "fault")],
            xRange: 0...2)
        let svg = chart.svg()
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.contains(#"<g class="axis x" data-min="0" data-max="2">"#))
        #expect(svg.contains(#"<g class="axis y" data-min="0" data-max="100">"#))
        let path = try #require(svg.split(separator: "\n").first { $0.contains(#"data-name="p1""#) })
        #expect(path.contains(#"data-points="11""#))
        let d = try #require(path.split(separator: "d=\"").last?.split(separator: "\"").first)
        #expect(d.split(separator: " ").count == 11 && d.hasPrefix("M64.0,246.0"), "first point at the plot's bottom left: \(d)")
        #expect(d.hasSuffix("L744.0,34.0"), "last point at the plot's top right: \(d)")
        #expect(svg.contains(#"data-name="p&amp;2" data-points="0" d="""#), "an empty series draws an empty path")
        #expect(svg.contains("Stock &lt;p1&gt;") && !svg.contains("<p1>"), "text is escaped")
        #expect(svg.contains(#"class="marker" data-t="1" data-kind="phase""#) && svg.contains("p1 sold out"))
        #expect(!svg.contains("outside"), "a marker outside the x range is not drawn")
        for label in [">0<", ">0.5<", ">1<", ">1.5<", ">2<", ">100<"] { #expect(svg.contains(label), "tick label \(label)") }
    }

    @Test func aMarkerNearTheRightEdgeIsLabelledToItsLeft() {
        let chart = LineChart(
            id: "c", title: "t", unit: "u", series: [.init(name: "a", points: [Point(x: 0, y: 1), Point(x: 10, y: 2)])],
            markers: [.init(x: 0.5, label: "buyers start", kind: "phase"), .init(x: 9.9, label: "buyers done", kind: "phase")],
            xRange: 0...10)
        let labels = chart.svg().split(separator: "\n").filter { $0.contains("buyers") }
        #expect(labels.count == 2 && labels[0].contains(#"text-anchor="start""#) && labels[1].contains(#"text-anchor="end""#), "\(labels)")
    }

    @Test func closeMarkersGetRowsOfTheirOwnAndFaultsAreMarkedAsSuch() {
        let chart = LineChart(
            id: "c", title: "t", unit: "u", series: [.init(name: "a", points: [Point(x: 0, y: 1), Point(x: 10, y: 2)])],
            markers: [.init(x: 1, label: "lottery: keep 0.2", kind: "action"), .init(x: 1.1, label: "edge2 killed", kind: "fault"),
                      .init(x: 1.2, label: "raise p1 by 50", kind: "action"), .init(x: 8, label: "p1 sold out", kind: "phase")],
            xRange: 0...10)
        #expect(chart.labelRows(chart.markers, x: 0...10, y: 0...2) == [0, 1, 2, 0], "far apart: the same row again")
        let svg = chart.svg()
        #expect(svg.contains(#"<g class="marker" data-t="1.1" data-kind="fault">"#))
        #expect(svg.contains(##"fill="#c00000">edge2 killed</text>"##), "a fault in red")
    }

    @Test func pointsOutsideTheRangeAreClampedToThePlot() {
        let chart = LineChart(
            id: "c", title: "t", unit: "u", series: [.init(name: "a", points: [Point(x: -5, y: 1), Point(x: 50, y: 2)])],
            xRange: 0...10)
        let svg = chart.svg()
        #expect(svg.contains(#"d="M64.0,"#) && svg.contains(" L744.0,"))
    }

    @Test func tickLabelsAreShort() {
        #expect(LineChart.label(0) == "0")
        #expect(LineChart.label(1200) == "1,200")
        #expect(LineChart.label(25_000) == "25k")
        #expect(LineChart.label(1_250_000) == "1.25M")
        #expect(LineChart.label(0.25) == "0.25")
    }

    @Test func pageIsSelfContainedWithEveryChartAndTable() {
        let samples = (0..<10).map { index in
            Timeline.Sample(
                t: Double(index) / 5, attemptsPerSecond: ["purchased": 100, "shed": 900], latencyP50Ms: 1, latencyP99Ms: 5,
                remaining: ["p1": Int64(100 - index * 10)], edgeAttemptsPerSecond: ["edge 1": 500, "edge 2": 500],
                edgeQuotaLeft: ["edge 1": 50, "edge 2": 40])
        }
        let timeline = Timeline(samples: samples, events: [.init(t: 0.4, kind: .action, label: "shed set to <1 in 10>")])
        let page = ReportPage(
            title: "Flash sale report", summary: ["3 products"], timeline: timeline,
            tables: [.init(title: "Products", header: ["product", "orders"], rows: [["p1", "100"]])],
            auditClean: true, audit: ["remaining + live holds + paid = stock"])
        let html = page.html()
        #expect(page.charts.map(\.id) == ["attempts", "stock", "latency", "edges", "quota"])
        #expect(html.components(separatedBy: "<svg ").count == 6)
        #expect(!html.contains("<script") && !html.contains("<link") && !html.contains("@import") && !html.contains("url("))
        #expect(html.replacingOccurrences(of: "xmlns=\"http://www.w3.org/2000/svg\"", with: "").range(of: "http") == nil,
                "no address to fetch")
        #expect(html.contains("shed set to &lt;1 in 10&gt;") && html.contains("<td>p1</td><td>100</td>"))
        #expect(html.contains("audit: clean"))
        #expect(timeline.timeRange == 0...1.8)
    }
}
