import Cluster
import Foundation
import Testing
import TestSupport

/// `flashsale sale --html`: a small sale end to end (with an operator's stock raise mid-sale), its page rendered by a real headless browser (Debian's
/// chromium). Every chart drew data (its paths have length and extent in the browser's layout), the axes span the
/// sale's real range, the browser logged nothing (an SVG it cannot parse is logged), and the page fetches nothing.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct SalePageTests {
    static let chromium = "/usr/bin/chromium"

    /// Measures each chart in the browser and writes what it found into `<pre id="check">` (added to a copy of the
    /// page, for the test only: the page itself has no script).
    static let probe = """
        <pre id="check"></pre><script>
        const charts = [...document.querySelectorAll('svg.chart')].map(svg => ({
          id: svg.id,
          x: [svg.querySelector('.axis.x').dataset.min, svg.querySelector('.axis.x').dataset.max].map(Number),
          y: [svg.querySelector('.axis.y').dataset.min, svg.querySelector('.axis.y').dataset.max].map(Number),
          xLabels: [...svg.querySelectorAll('.axis.x text')].map(t => t.textContent),
          yLabels: [...svg.querySelectorAll('.axis.y text')].map(t => t.textContent),
          markers: svg.querySelectorAll('.marker').length,
          markerLabels: [...svg.querySelectorAll('.marker text')].map(t => t.textContent),
          series: [...svg.querySelectorAll('path.series')].map(p => {
            const box = p.getBBox();
            return {name: p.dataset.name, points: Number(p.dataset.points), length: p.getTotalLength(), width: box.width, height: box.height};
          }),
        }));
        document.getElementById('check').textContent = JSON.stringify(charts);
        </script>
        """

    struct Chart: Decodable {
        struct Series: Decodable {
            var name: String
            var points: Int
            var length: Double
            var width: Double
            var height: Double
        }

        var id: String
        var x: [Double]
        var y: [Double]
        var xLabels: [String]
        var yLabels: [String]
        var markers: Int
        var markerLabels: [String]
        var series: [Series]
    }

    struct Report: Decodable {
        var wallSeconds: Double
        var auditClean: Bool
        var outcomes: Outcomes
        struct Outcomes: Decodable { var purchased: Int }
    }

    @Test func everyChartDrawsTheSale() async throws {
        let folder = RunFolder.mine("salepage-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder.url, withIntermediateDirectories: true)
        // Kept when FLASHSALE_KEEP_PAGE is set, to look at the screenshot.
        defer { if ProcessInfo.processInfo.environment["FLASHSALE_KEEP_PAGE"] == nil { folder.remove() } }
        let page = folder.path("sale.html"), json = folder.path("sale.json")

        // The sale on the test run's servers (as the sale benchmark runs it), not servers of its own.
        let environment = [
            "FLASHSALE_PG_DSN": try await TestServers.postgresDSN(), "FLASHSALE_ZK": try await TestServers.zooKeeperHosts(),
        ]
        let sale = try await runCommand(
            try RepoPaths.executable("flashsale").path,
            ["sale", "--products", "2", "--stock", "300", "--attempts", "12000", "--users", "200000", "--connections", "16",
             "--depth", "4", "--edges", "2", "--keep", "0.3", "--raise-at", "0.5:p1:50", "--html", page, "--json", json],
            environment: environment, timeout: .seconds(90))
        #expect(sale.status == 0, "\(sale.output)")
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: json)))
        // 300 of each, and of p1's 50 raised units those the remaining buyers reached (the raise lands mid-sale).
        #expect(report.auditClean && (600...650).contains(report.outcomes.purchased), "\(report.outcomes.purchased)")

        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(!html.contains("<script") && !html.contains("<link") && !html.contains("url("), "self-contained")
        #expect(html.replacingOccurrences(of: #"xmlns="http://www.w3.org/2000/svg""#, with: "").range(of: "http") == nil,
                "no address to fetch")
        #expect(html.contains("audit: clean"))
        #expect(html.contains("<td>action</td><td>raise p1 by 50</td>"), "the raise is an event of the page")

        // The browser: the probe's measurements (DOM after load), a screenshot, and its console.
        let probed = folder.path("probed.html")
        try html.replacingOccurrences(of: "</body>", with: Self.probe + "</body>").write(toFile: probed, atomically: true, encoding: .utf8)
        let screenshot = folder.path("sale.png")
        let browser = try await runCommand("/bin/sh", ["-c", """
            \(Self.chromium) --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir=\(folder.path("profile")) \
              --enable-logging=stderr --v=0 --window-size=1600,2400 --screenshot=\(screenshot) --dump-dom \
              file://\(probed) > \(folder.path("dom.html")) 2> \(folder.path("console.txt"))
            """], timeout: .seconds(60))
        #expect(browser.status == 0, "\(browser.output)")
        let console = try String(contentsOfFile: folder.path("console.txt"), encoding: .utf8)
        let messages = console.split(separator: "\n").filter { $0.contains("CONSOLE") }
        #expect(messages.isEmpty, "the browser logged: \(messages)")
        let shot = try FileManager.default.attributesOfItem(atPath: screenshot)[.size] as? Int ?? 0
        #expect(shot > 20_000, "a screenshot of the page: \(shot) bytes")

        let dom = try String(contentsOfFile: folder.path("dom.html"), encoding: .utf8)
        let found = try #require(dom.range(of: #"<pre id="check">"#).flatMap { start in
            dom.range(of: "</pre>", range: start.upperBound..<dom.endIndex).map { String(dom[start.upperBound..<$0.lowerBound]) }
        })
        let text = found.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
        let charts = try JSONDecoder().decode([Chart].self, from: Data(text.utf8))
        #expect(charts.map(\.id) == ["attempts", "stock", "latency", "edges", "quota"])
        for chart in charts {
            let drawn = chart.series.filter { $0.points >= 2 && $0.length > 0 && $0.width > 0 }
            #expect(!drawn.isEmpty, "\(chart.id) drew no line: \(chart.series.map { ($0.name, $0.points, $0.length) })")
            // The x axis is the sale's own clock: from its first sample to past the buyers' wall time.
            #expect(chart.x[0] == 0 && chart.x[1] >= report.wallSeconds && chart.x[1] < report.wallSeconds + 60,
                    "\(chart.id) x axis \(chart.x), wall time \(report.wallSeconds)")
            #expect(chart.xLabels.contains("0") && chart.xLabels.count >= 3, "\(chart.id) x labels \(chart.xLabels)")
            #expect(chart.y[0] == 0 && chart.y[1] > 0 && chart.yLabels.contains("0"), "\(chart.id) y axis \(chart.y)")
            #expect(chart.markers >= 3 && chart.markerLabels.contains("raise p1 by 50"), "\(chart.id) marks the sale's events: \(chart.markerLabels)")
        }
        let stock = try #require(charts.first { $0.id == "stock" })
        #expect(stock.y[1] >= 300 && stock.y[1] < 600 && stock.yLabels.contains("300"), "stock axis \(stock.y) \(stock.yLabels)")
        #expect(Set(stock.series.map(\.name)) == ["p1", "p2"])
        let edges = try #require(charts.first { $0.id == "edges" })
        #expect(Set(edges.series.map(\.name)) == ["edge 1", "edge 2"])
        let attempts = try #require(charts.first { $0.id == "attempts" })
        #expect(attempts.series.contains { $0.name == "purchased" && $0.length > 0 } && attempts.series.contains { $0.name == "shed" })
    }
}
