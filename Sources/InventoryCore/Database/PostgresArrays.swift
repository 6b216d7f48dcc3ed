/// PostgreSQL's text form of integer arrays (`{1,2,3}`), written and read byte by byte: a batch carries thousands of
/// numbers each way, and a String per number would cost more than the database's own work on them.
enum PostgresArrays {
    /// `{v1,v2,...}` of `count` values produced by `value(i)`.
    static func text(count: Int, _ value: (Int) -> Int64) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(2 + count * 21)
        bytes.append(UInt8(ascii: "{"))
        var digits = [UInt8](repeating: 0, count: 20)
        for index in 0..<count {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            let number = value(index)
            var magnitude = number.magnitude
            if number < 0 { bytes.append(UInt8(ascii: "-")) }
            var length = 0
            repeat {
                digits[length] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                length += 1
            } while magnitude > 0
            while length > 0 {
                length -= 1
                bytes.append(digits[length])
            }
        }
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The integers of `{...}`; NULL elements read as 0. Nil when the text is not an integer array.
    static func integers(_ text: String) -> [Int64]? {
        var text = text
        return text.withUTF8 { bytes -> [Int64]? in
            guard bytes.count >= 2, bytes.first == UInt8(ascii: "{"), bytes.last == UInt8(ascii: "}") else { return nil }
            var values: [Int64] = []
            values.reserveCapacity(bytes.count / 8)
            var index = 1
            let end = bytes.count - 1
            if index == end { return values }
            while index <= end {
                var negative = false
                var value: Int64 = 0
                var digits = 0
                if bytes[index] == UInt8(ascii: "-") {
                    negative = true
                    index += 1
                }
                if index + 3 < end, bytes[index] == UInt8(ascii: "N") {  // NULL
                    index += 4
                } else {
                    // Accumulated towards the sign, so that Int64.min (an id's bit pattern) reads too.
                    while index < end, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                        let digit = Int64(bytes[index] - UInt8(ascii: "0"))
                        let (times, overflowA) = value.multipliedReportingOverflow(by: 10)
                        let (sum, overflowB) = negative
                            ? times.subtractingReportingOverflow(digit) : times.addingReportingOverflow(digit)
                        guard !overflowA, !overflowB else { return nil }
                        value = sum
                        digits += 1
                        index += 1
                    }
                    guard digits > 0 else { return nil }
                }
                values.append(value)
                guard index == end || bytes[index] == UInt8(ascii: ",") else { return nil }
                index += 1
            }
            return values
        }
    }
}
