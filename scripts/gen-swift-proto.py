#!/usr/bin/env python3
"""Generates the Swift side of the platform's messages from proto/*.proto.

protoc-c writes the C structs and the (un)packers; this writes, for every message, a Swift value type and the
bridge between the two, so that Swift code outside Sources/Proto never sees a C struct. It understands the subset
of proto3 the platform uses: scalar, string, bytes, enum and message fields, `repeated`, and `oneof` of scalars.

Usage: gen-swift-proto.py OUT_DIR proto/a.proto [proto/b.proto ...]
"""
import re
import sys
from pathlib import Path

# Swift type names get a prefix per proto package, so that `flashsale.wire.Request` is `WireRequest`.
PREFIX = {"flashsale": "", "flashsale.wire": "Wire"}

SCALARS = {
    "uint64": ("UInt64", "0"), "int64": ("Int64", "0"), "uint32": ("UInt32", "0"), "int32": ("Int32", "0"),
    "fixed64": ("UInt64", "0"), "sfixed64": ("Int64", "0"), "fixed32": ("UInt32", "0"),
    "sint64": ("Int64", "0"), "sint32": ("Int32", "0"),
    "bool": ("Bool", "false"), "double": ("Double", "0"), "float": ("Float", "0"),
}


def snake_to_camel(name):
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


SWIFT_KEYWORDS = {"internal", "public", "private", "default", "case", "switch", "class", "struct", "enum", "func",
                  "in", "is", "as", "let", "var", "return", "self", "Self", "true", "false", "nil", "import", "init"}


def escape(identifier):
    return f"`{identifier}`" if identifier in SWIFT_KEYWORDS else identifier


def camel_to_snake(name):
    # protobuf-c's own rule for C identifiers: an underscore before every inner capital, then lower-case.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Field:
    def __init__(self, label, type_, name, number, oneof=None):
        self.repeated = label == "repeated"
        self.type = type_
        self.name = name
        self.number = int(number)
        self.oneof = oneof
        self.swift = snake_to_camel(name)


class Message:
    def __init__(self, package, name):
        self.package, self.name, self.fields, self.oneofs = package, name, [], []


class Enum:
    def __init__(self, package, name):
        self.package, self.name, self.values = package, name, []


def parse(path):
    text = re.sub(r"//[^\n]*", "", Path(path).read_text())
    package = re.search(r"package\s+([\w.]+)\s*;", text).group(1)
    messages, enums = [], []
    for kind, name, body in re.findall(r"(message|enum)\s+(\w+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", text):
        if kind == "enum":
            e = Enum(package, name)
            e.values = [(n, int(v)) for n, v in re.findall(r"(\w+)\s*=\s*(-?\d+)\s*;", body)]
            enums.append(e)
            continue
        m = Message(package, name)
        for oneof_name, oneof_body in re.findall(r"oneof\s+(\w+)\s*\{([^}]*)\}", body):
            m.oneofs.append(oneof_name)
            for t, n, num in re.findall(r"([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", oneof_body):
                m.fields.append(Field(None, t, n, num, oneof=oneof_name))
        plain = re.sub(r"oneof\s+\w+\s*\{[^}]*\}", "", body)
        for label, t, n, num in re.findall(r"(repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", plain):
            m.fields.append(Field(label.strip() or None, t, n, num))
        m.fields.sort(key=lambda f: f.number)
        messages.append(m)
    return package, messages, enums


class Generator:
    def __init__(self, files):
        self.messages, self.enums = {}, {}
        for package, messages, enums in files:
            for m in messages:
                self.messages[m.name] = m
            for e in enums:
                self.enums[e.name] = e

    def swift_name(self, decl):
        return PREFIX[decl.package] + decl.name

    def c_type(self, decl):
        return "__".join(p.capitalize() for p in decl.package.split(".")) + "__" + decl.name

    def c_func(self, decl):
        return "__".join(decl.package.split(".")) + "__" + camel_to_snake(decl.name)

    def field_swift_type(self, f):
        if f.type in SCALARS:
            base = SCALARS[f.type][0]
        elif f.type == "string":
            base = "String"
        elif f.type == "bytes":
            base = "ByteBuffer"
        elif f.type in self.enums:
            base = self.swift_name(self.enums[f.type])
        else:
            base = self.swift_name(self.messages[f.type])
        if f.repeated:
            return f"[{base}]"
        if f.type in self.messages:
            return f"{base}?"
        return base

    def field_default(self, f):
        if f.repeated:
            return "[]"
        if f.type in SCALARS:
            return SCALARS[f.type][1]
        if f.type == "string":
            return '""'
        if f.type == "bytes":
            return "ByteBuffer()"
        if f.type in self.enums:
            return ".init(rawValue: 0)"
        return "nil"

    # -- value -> C (inside fill) and C -> value (inside init(c:)) for one element of a field's type
    def to_c(self, f, expr):
        if f.type == "bool":
            return f"({expr} ? 1 : 0)"
        if f.type in SCALARS:
            return expr
        if f.type == "string":
            return f"arena.cString({expr})"
        if f.type == "bytes":
            return f"arena.binary({expr})"
        if f.type in self.enums:
            return f".init(rawValue: .init(truncatingIfNeeded: {expr}.rawValue))"
        msg = self.messages[f.type]
        return f"arena.message({self.c_type(msg)}.self) {{ {expr}.fill(&$0, arena: arena) }}"

    def from_c(self, f, expr):
        if f.type == "bool":
            return f"({expr} != 0)"
        if f.type in SCALARS:
            return expr
        if f.type == "string":
            return f"ProtoRuntime.string({expr})"
        if f.type == "bytes":
            return f"ProtoRuntime.bytes({expr})"
        if f.type in self.enums:
            return f".init(rawValue: .init(truncatingIfNeeded: {expr}.rawValue))"
        return f"{self.swift_name(self.messages[f.type])}(c: {expr}!)"

    def enum(self, e):
        name = self.swift_name(e)
        prefix = camel_to_snake(e.name).upper() + "_"
        lines = [f"/// `{e.package}.{e.name}`: open set, so that a newer peer's value survives a round trip.",
                 f"public struct {name}: RawRepresentable, Hashable, Sendable, CustomStringConvertible {{",
                 "    public var rawValue: Int32",
                 "    public init(rawValue: Int32) { self.rawValue = rawValue }"]
        names = []
        for n, v in e.values:
            short = n[len(prefix):] if n.startswith(prefix) else n
            case = snake_to_camel(short.lower())
            names.append((case, v))
            lines.append(f"    public static let {escape(case)} = {name}(rawValue: {v})")
        lines.append("    public var description: String {")
        lines.append("        switch rawValue {")
        for case, v in names:
            lines.append(f'        case {v}: return "{case}"')
        lines.append(f'        default: return "{name}(\\(rawValue))"')
        lines += ["        }", "    }", "}", ""]
        return "\n".join(lines)

    def message(self, m):
        name, ctype, cfunc = self.swift_name(m), self.c_type(m), self.c_func(m)
        L = [f"/// `{m.package}.{m.name}`", f"public struct {name}: ProtoMessage, Equatable {{"]
        plain = [f for f in m.fields if not f.oneof]
        for f in plain:
            L.append(f"    public var {f.swift}: {self.field_swift_type(f)} = {self.field_default(f)}")
        for o in m.oneofs:
            members = [f for f in m.fields if f.oneof == o]
            enum_name = o[:1].upper() + snake_to_camel(o)[1:]
            L.append(f"    public enum {enum_name}: Sendable, Equatable {{")
            for f in members:
                L.append(f"        case {f.swift}({self.field_swift_type(f)})")
            L.append("    }")
            L.append(f"    public var {snake_to_camel(o)}: {enum_name}? = nil")
        # memberwise init with defaults
        params = [f"{f.swift}: {self.field_swift_type(f)} = {self.field_default(f)}" for f in plain]
        params += [f"{snake_to_camel(o)}: {o[:1].upper() + snake_to_camel(o)[1:]}? = nil" for o in m.oneofs]
        L.append("")
        L.append("    public init() {}")
        if params:
            L.append("")
            L.append("    public init(" + ", ".join(params) + ") {")
            for f in plain:
                L.append(f"        self.{f.swift} = {f.swift}")
            for o in m.oneofs:
                L.append(f"        self.{snake_to_camel(o)} = {snake_to_camel(o)}")
            L.append("    }")
        L.append("}")
        L.append("")
        # bridge
        L.append(f"extension {name}: ProtoBridged {{")
        L.append(f"    typealias CMessage = {ctype}")
        L.append(f"    static func unpackC(_ length: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<{ctype}>? {{")
        L.append(f"        {cfunc}__unpack(nil, length, data)")
        L.append("    }")
        L.append(f"    static func freeC(_ message: UnsafeMutablePointer<{ctype}>) {{ {cfunc}__free_unpacked(message, nil) }}")
        L.append(f"    static func packedSizeC(_ message: UnsafePointer<{ctype}>) -> Int {{ {cfunc}__get_packed_size(message) }}")
        L.append(f"    static func packC(_ message: UnsafePointer<{ctype}>, _ out: UnsafeMutablePointer<UInt8>) -> Int {{ {cfunc}__pack(message, out) }}")
        L.append("")
        L.append(f"    public func serialize(into buffer: inout ByteBuffer) {{ ProtoRuntime.serialize(self, into: &buffer) }}")
        L.append(f"    public init(decoding bytes: UnsafeRawBufferPointer) throws {{ self = try ProtoRuntime.decode(bytes) }}")
        L.append("")
        L.append(f"    func fill(_ c: inout {ctype}, arena: ProtoArena) {{")
        L.append(f"        {cfunc}__init(&c)")
        for f in plain:
            if f.repeated:
                elem_c = self.to_c(f, "$0")
                if f.type in self.messages:
                    L.append(f"        (c.n_{f.name}, c.{f.name}) = arena.messageArray(self.{f.swift}) {{ $0.fill(&$1, arena: arena) }}")
                else:
                    L.append(f"        (c.n_{f.name}, c.{f.name}) = arena.array(self.{f.swift}.map {{ {elem_c} }})")
            elif f.type in self.messages:
                L.append(f"        if let value = self.{f.swift} {{ c.{f.name} = {self.to_c(f, 'value')} }}")
            else:
                L.append(f"        c.{f.name} = {self.to_c(f, 'self.' + f.swift)}")
        for o in m.oneofs:
            members = [f for f in m.fields if f.oneof == o]
            L.append(f"        switch self.{snake_to_camel(o)} {{")
            for f in members:
                L.append(f"        case .{f.swift}(let value)?:")
                L.append(f"            c.{o}_case = .init(rawValue: {f.number})")
                L.append(f"            c.{f.name} = {self.to_c(f, 'value')}")
            L.append("        case nil: break")
            L.append("        }")
        L.append("    }")
        L.append("")
        L.append(f"    init(c: UnsafePointer<{ctype}>) {{")
        L.append("        self.init()")
        for f in plain:
            if f.repeated:
                if f.type in self.messages:
                    L.append(f"        self.{f.swift} = (0..<c.pointee.n_{f.name}).map {{ {self.swift_name(self.messages[f.type])}(c: c.pointee.{f.name}[$0]!) }}")
                else:
                    L.append(f"        self.{f.swift} = (0..<c.pointee.n_{f.name}).map {{ {self.from_c(f, f'c.pointee.{f.name}[$0]')} }}")
            elif f.type in self.messages:
                L.append(f"        if let value = c.pointee.{f.name} {{ self.{f.swift} = {self.swift_name(self.messages[f.type])}(c: value) }}")
            else:
                L.append(f"        self.{f.swift} = {self.from_c(f, f'c.pointee.{f.name}')}")
        for o in m.oneofs:
            members = [f for f in m.fields if f.oneof == o]
            L.append(f"        switch c.pointee.{o}_case.rawValue {{")
            for f in members:
                L.append(f"        case {f.number}: self.{snake_to_camel(o)} = .{f.swift}({self.from_c(f, f'c.pointee.{f.name}')})")
            L.append("        default: break")
            L.append("        }")
        L.append("    }")
        L.append("}")
        L.append("")
        return "\n".join(L)


def main():
    out = Path(sys.argv[1])
    files = [parse(p) for p in sys.argv[2:]]
    gen = Generator(files)
    for path, (package, messages, enums) in zip(sys.argv[2:], files):
        body = ["// Generated by scripts/gen-swift-proto.py from " + path + ". Do not edit.",
                "import CProtobufC", "import NIOCore", "import ProtoC", ""]
        body += [gen.enum(e) for e in enums]
        body += [gen.message(m) for m in messages]
        (out / (Path(path).stem + ".pb.swift")).write_text("\n".join(body))


if __name__ == "__main__":
    main()
