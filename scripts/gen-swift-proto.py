#!/usr/bin/env python3
"""Generates the Swift side of the platform's contract from protoc's descriptors of proto/*.proto.

protoc-c writes the C structs and the (un)packers; this writes, for every message, a Swift value type and the
bridge between the two, so that Swift code outside Sources/Proto never sees a C struct. It understands the subset
of proto3 the platform uses: scalar, string, bytes, enum and message fields, `repeated`, and `oneof` of scalars;
anything else in a message file is refused rather than misread.

From the `service` blocks (proto/services.proto) it writes the method table: per service an enum namespace with,
per method, its wire name, `Input` and `Output` and its access class (options.proto), and the list of its
descriptors; and the README's method table, between its markers. Into Wire (which has the router and the client),
per service: a server protocol with one requirement per method (an async function, or a function handed an
`RPCResponder` for a method marked `on_event_loop`) and a `register(into:)` that registers every method, so a server
that lacks one does not compile; and a typed client stub over `RPCClient`, one function per method.

Usage:
  gen-swift-proto.py --c-sources SET               the message files, for protoc-c's --c_out (those that do not
                                                   depend on descriptor.proto)
  gen-swift-proto.py SET OUT_DIR WIRE_DIR [README] write OUT_DIR/<file>.pb.swift, OUT_DIR/<file>.rpc.swift,
                                                   WIRE_DIR/<file>.stubs.swift, and rewrite README's generated
                                                   method table in place
SET is `protoc-c --descriptor_set_out=SET --include_imports --include_source_info` over proto/*.proto.
"""
import re
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

FieldType = descriptor_pb2.FieldDescriptorProto

# Swift type names get a prefix per proto package, so that `flashsale.wire.Request` is `WireRequest`.
PREFIX = {"flashsale": "", "flashsale.wire": "Wire"}

SCALARS = {
    "uint64": ("UInt64", "0"), "int64": ("Int64", "0"), "uint32": ("UInt32", "0"), "int32": ("Int32", "0"),
    "fixed64": ("UInt64", "0"), "sfixed64": ("Int64", "0"), "fixed32": ("UInt32", "0"), "sfixed32": ("Int32", "0"),
    "sint64": ("Int64", "0"), "sint32": ("Int32", "0"),
    "bool": ("Bool", "false"), "double": ("Double", "0"), "float": ("Float", "0"),
}

# protoc's field types by the names the generator uses (message and enum fields go by their full names).
TYPE_NAMES = {
    FieldType.TYPE_UINT64: "uint64", FieldType.TYPE_INT64: "int64", FieldType.TYPE_UINT32: "uint32",
    FieldType.TYPE_INT32: "int32", FieldType.TYPE_FIXED64: "fixed64", FieldType.TYPE_SFIXED64: "sfixed64",
    FieldType.TYPE_FIXED32: "fixed32", FieldType.TYPE_SFIXED32: "sfixed32", FieldType.TYPE_SINT64: "sint64",
    FieldType.TYPE_SINT32: "sint32", FieldType.TYPE_BOOL: "bool", FieldType.TYPE_DOUBLE: "double",
    FieldType.TYPE_FLOAT: "float", FieldType.TYPE_STRING: "string", FieldType.TYPE_BYTES: "bytes",
}

# options.proto's Access values, as Wire's RPCAccess cases (Sources/Proto/RPCMethod.swift).
ACCESS = {"PUBLIC": "public", "SERVICE_TOKEN": "service", "OPERATOR_TOKEN": "operator"}
# ... and as the README's token column.
ACCESS_README = {"public": "none", "service": "service", "operator": "operator"}

README_BEGIN = "<!-- BEGIN methods: generated from proto/services.proto by scripts/gen-proto.sh; do not edit -->"
README_END = "<!-- END methods -->"


# Messages (de)serialized by Sources/Proto/HotMessageCodec.swift rather than protobuf-c: the purchase, which every
# attempt encodes and decodes two to six times on its way (client, edge, inventory). protobuf-c stays their
# reference: HotMessageCodecTests compares the two, byte for byte and verdict for verdict.
HAND_CODED = {"flashsale.PurchaseRequest", "flashsale.PurchaseResponse"}


def fail(message):
    sys.exit(f"gen-swift-proto.py: {message}")


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
    def __init__(self, proto, oneof=None):
        if proto.label == FieldType.LABEL_REQUIRED or proto.proto3_optional:
            fail(f"field {proto.name}: only proto3 fields without `optional` are supported")
        self.repeated = proto.label == FieldType.LABEL_REPEATED
        if proto.type in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
            self.type = proto.type_name        # ".flashsale.Product"
        elif proto.type in TYPE_NAMES:
            self.type = TYPE_NAMES[proto.type]
        else:
            fail(f"field {proto.name}: unsupported type {proto.type}")
        self.name = proto.name
        self.number = proto.number
        self.oneof = oneof
        self.swift = snake_to_camel(proto.name)


class Message:
    def __init__(self, package, proto):
        self.package, self.name = package, proto.name
        if proto.nested_type or proto.enum_type or proto.extension:
            fail(f"message {proto.name}: nested types, enums and extensions are not supported")
        self.oneofs = [o.name for o in proto.oneof_decl]
        self.fields = [Field(f, self.oneofs[f.oneof_index] if f.HasField("oneof_index") else None) for f in proto.field]
        self.fields.sort(key=lambda f: f.number)


class Enum:
    def __init__(self, package, proto):
        self.package, self.name = package, proto.name
        self.values = [(v.name, v.number) for v in proto.value]


def comments(file, path):
    """The comment written before the declaration at `path` (or after it, on its line), as lines."""
    for location in file.source_code_info.location:
        if list(location.path) == path:
            text = location.leading_comments or location.trailing_comments
            return [line.strip() for line in text.strip().splitlines()]
    return []


def option(options, number):
    """The value of a custom option (an extension of the options message) by field number: a varint or a string.
    The extensions are not compiled into Python, so their values are read from the options' unknown fields."""
    data, i = options.SerializeToString(), 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value
    found = None
    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value = data[i:i + length].decode()
            i += length
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 5:
            value, i = None, i + 4
        else:
            fail(f"unexpected wire type {wire} in options")
        if field == number:
            found = value
    return found


class Generator:
    def __init__(self):
        self.messages, self.enums = {}, {}   # by full name: ".flashsale.Product"

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
        codec = "HotMessageCodec" if f"{m.package}.{m.name}" in HAND_CODED else "ProtoRuntime"
        L.append(f"    public func serialize(into buffer: inout ByteBuffer) {{ {codec}.serialize(self, into: &buffer) }}")
        L.append(f"    public init(decoding bytes: UnsafeRawBufferPointer) throws {{ self = try {codec}.decode(bytes) }}")
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


class Contract:
    """The services of the descriptor set, with their options resolved."""

    def __init__(self, files, messages, gen):
        extensions = {e.name: e for f in files for e in f.extension}
        if any(name not in extensions for name in ("access", "method_prefix", "on_event_loop")):
            fail("options.proto's `access`, `method_prefix` and `on_event_loop` extensions are missing from the descriptor set")
        access_number, prefix_number = extensions["access"].number, extensions["method_prefix"].number
        loop_number = extensions["on_event_loop"].number
        access_enum = {v.number: v.name for f in files for e in f.enum_type if e.name == "Access" for v in e.value}
        self.services = []
        for file in files:
            for si, service in enumerate(file.service):
                prefix = option(service.options, prefix_number) or ""
                full = f"{file.package}.{service.name}"
                methods = []
                for mi, method in enumerate(service.method):
                    if method.client_streaming or method.server_streaming:
                        fail(f"{full}.{method.name}: streaming is not supported by the wire protocol")
                    value = access_enum.get(option(method.options, access_number))
                    if value not in ACCESS:
                        fail(f"{full}.{method.name}: say who may call it: option (access) = PUBLIC, SERVICE_TOKEN or OPERATOR_TOKEN")
                    for type_name in (method.input_type, method.output_type):
                        if type_name not in messages:
                            fail(f"{full}.{method.name}: {type_name} is not a message of a message file")
                    methods.append({
                        "method": method.name,
                        "wire": f"{prefix}.{method.name}" if prefix else method.name,
                        "input": gen.swift_name(messages[method.input_type]),
                        "output": gen.swift_name(messages[method.output_type]),
                        "access": ACCESS[value],
                        "on_event_loop": bool(option(method.options, loop_number)),
                        "func": escape(method.name[:1].lower() + method.name[1:]),
                        "doc": comments(file, [6, si, 2, mi]),
                    })
                self.services.append({
                    "file": file.name, "full": full, "swift": PREFIX[file.package] + service.name + "RPC",
                    "server": PREFIX[file.package] + service.name + "RPCServer",
                    "client": PREFIX[file.package] + service.name + "RPCClient",
                    "doc": comments(file, [6, si]), "methods": methods,
                })

    def swift(self, file_name):
        L = [f"// Generated by scripts/gen-swift-proto.py from proto/{file_name}. Do not edit.", ""]
        services = [s for s in self.services if s["file"] == file_name]
        for s in services:
            L += [f"/// `{s['full']}`" + (":" if s["doc"] else "")] + [f"/// {line}".rstrip() for line in s["doc"]]
            L.append(f"public enum {s['swift']}: Sendable {{")
            L.append(f"    /// `{s['full']}` and its methods.")
            L.append(f"    public static let descriptor = RPCServiceDescriptor(name: \"{s['full']}\", methods: descriptors)")
            for m in s["methods"]:
                L.append("")
                L.append(f"    /// `{m['wire']}`, {m['access']}" + (":" if m["doc"] else ""))
                L += [f"    /// {line}".rstrip() for line in m["doc"]]
                L.append(f"    public enum {m['method']}: RPCMethod {{")
                L.append(f"        public typealias Input = {m['input']}")
                L.append(f"        public typealias Output = {m['output']}")
                L.append("        public static let descriptor = RPCMethodDescriptor(")
                L.append(f"            service: \"{s['full']}\", method: \"{m['method']}\", name: \"{m['wire']}\", access: .{m['access']},")
                L.append(f"            input: {m['input']}.self, output: {m['output']}.self)")
                L.append("    }")
            L.append("")
            L.append(f"    /// Every method of `{s['full']}`, in the order proto/{file_name} declares them.")
            L.append(f"    public static let descriptors: [RPCMethodDescriptor] = [")
            L += [f"        {m['method']}.descriptor," for m in s["methods"]]
            L.append("    ]")
            L.append("}")
            L.append("")
        L.append(f"/// Every service of proto/{file_name}: what the fuzz harness, the access-control tests and the README's method")
        L.append("/// table go through.")
        L.append("public enum RPCContract {")
        L.append("    public static let services: [RPCServiceDescriptor] = [")
        L += [f"        {s['swift']}.descriptor," for s in services]
        L.append("    ]")
        L.append("")
        L.append("    /// Every method of every service, service by service.")
        L.append("    public static let methods: [RPCMethodDescriptor] = services.flatMap(\\.methods)")
        L.append("}")
        L.append("")
        return "\n".join(L)

    def stubs(self, file_name):
        """Wire's side: per service, the server protocol with its `register(into:)`, and the client stub."""
        L = [f"// Generated by scripts/gen-swift-proto.py from proto/{file_name}. Do not edit.",
             "import NIOCore", "import Proto", ""]
        for s in [s for s in self.services if s["file"] == file_name]:
            ns, server, client = s["swift"], s["server"], s["client"]
            L.append(f"/// What a server of `{s['full']}` implements: one requirement per method of proto/{file_name}, so a")
            L.append("/// server that lacks one does not compile. `register(into:)` registers them all (see `RPCRouter`).")
            L.append(f"public protocol {server}: Sendable {{")
            for m in s["methods"]:
                L.append(f"    /// `{m['wire']}` ({m['access']}" + (", on the event loop: must not block, completes `responder` now or later)" if m["on_event_loop"] else ")"))
                if m["on_event_loop"]:
                    L.append(f"    func {m['func']}(_ request: {m['input']}, context: ServerCallContext, responder: RPCResponder<{m['output']}>)")
                else:
                    L.append(f"    func {m['func']}(_ request: {m['input']}, context: ServerCallContext) async throws -> {m['output']}")
            L.append("}")
            L.append("")
            L.append(f"extension {server} {{")
            L.append(f"    /// Registers every method of `{s['full']}`, or those `include` accepts (a server that splits them over")
            L.append("    /// two ports), each with the contract's name, types and access.")
            L.append("    public func register(")
            L.append("        into router: inout RPCRouter, where include: (RPCMethodDescriptor) -> Bool = { _ in true }")
            L.append("    ) {")
            for m in s["methods"]:
                L.append(f"        if include({ns}.{m['method']}.descriptor) {{")
                if m["on_event_loop"]:
                    L.append(f"            router.register({ns}.{m['method']}.self, onEventLoop: {{ self.{m['func']}($0, context: $1, responder: $2) }})")
                else:
                    L.append(f"            router.register({ns}.{m['method']}.self) {{ try await self.{m['func']}($0, context: $1) }}")
                L.append("        }")
            L.append("    }")
            L.append("}")
            L.append("")
            L.append(f"/// A typed client of `{s['full']}` over an `RPCClient`: one function per method of proto/{file_name}, with its")
            L.append("/// contract's name and types. A `token` overrides the client's configured one for the call.")
            L.append(f"public struct {client}: Sendable {{")
            L.append("    public let rpc: RPCClient")
            L.append("")
            L.append("    public init(_ rpc: RPCClient) {")
            L.append("        self.rpc = rpc")
            L.append("    }")
            for m in s["methods"]:
                L.append("")
                L.append(f"    /// `{m['wire']}`")
                L.append(f"    public func {m['func']}(")
                L.append(f"        _ request: {m['input']}, timeout: TimeAmount? = nil, token: String? = nil")
                L.append(f"    ) async throws -> {m['output']} {{")
                L.append(f"        try await self.rpc.call({ns}.{m['method']}.self, request, timeout: timeout, token: token)")
                L.append("    }")
                L.append("")
                L.append(f"    /// `{m['wire']}`: the future form, for callers on an event loop.")
                L.append(f"    public func {m['method'][:1].lower() + m['method'][1:]}Future(")
                L.append(f"        _ request: {m['input']}, timeout: TimeAmount? = nil, token: String? = nil")
                L.append(f"    ) -> EventLoopFuture<{m['output']}> {{")
                L.append(f"        self.rpc.callFuture({ns}.{m['method']}.self, request, timeout: timeout, token: token)")
                L.append("    }")
            L.append("}")
            L.append("")
        return "\n".join(L)

    def readme(self):
        L = [README_BEGIN, "", "| method | request → response | token | what it does |", "| --- | --- | --- | --- |"]
        for s in self.services:
            for m in s["methods"]:
                what = " ".join(m["doc"])
                first = re.split(r"(?<=\.)\s", what, maxsplit=1)[0].rstrip(".")
                L.append(f"| `{m['wire']}` | `{m['input']}` → `{m['output']}` | {ACCESS_README[m['access']]} | {first} |")
        L += ["", README_END]
        return "\n".join(L)


def load(path):
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    return [f for f in descriptor_set.file if not f.name.startswith("google/")]


def depends_on_descriptor_proto(name, by_name):
    file = by_name.get(name)
    if name == "google/protobuf/descriptor.proto":
        return True
    return file is not None and any(depends_on_descriptor_proto(d, by_name) for d in file.dependency)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--c-sources":
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(Path(sys.argv[2]).read_bytes())
        by_name = {f.name: f for f in descriptor_set.file}
        print(" ".join(f"proto/{f.name}" for f in load(sys.argv[2])
                       if not f.service and not depends_on_descriptor_proto(f.name, by_name)))
        return
    if len(sys.argv) not in (4, 5):
        fail(__doc__)
    files = load(sys.argv[1])
    out, wire_out = Path(sys.argv[2]), Path(sys.argv[3])
    by_name = {f.name: f for f in files}
    message_files = [f for f in files if not f.service and not depends_on_descriptor_proto(f.name, by_name)]
    for f in files:
        if f.service and f.message_type:
            fail(f"{f.name}: declares services and messages; keep messages in a file protoc-c compiles")
    gen = Generator()
    messages = {}
    for f in files:
        for m in f.message_type:
            messages[f".{f.package}.{m.name}"] = Message(f.package, m)
    for f in message_files:
        if f.package not in PREFIX:
            fail(f"{f.name}: package {f.package} has no Swift prefix (PREFIX)")
        for e in f.enum_type:
            gen.enums[f".{f.package}.{e.name}"] = Enum(f.package, e)
        for m in f.message_type:
            gen.messages[f".{f.package}.{m.name}"] = messages[f".{f.package}.{m.name}"]
    for f in message_files:
        body = ["// Generated by scripts/gen-swift-proto.py from proto/" + f.name + ". Do not edit.",
                "import CProtobufC", "import NIOCore", "import ProtoC", ""]
        body += [gen.enum(gen.enums[f".{f.package}.{e.name}"]) for e in f.enum_type]
        body += [gen.message(gen.messages[f".{f.package}.{m.name}"]) for m in f.message_type]
        (out / (Path(f.name).stem + ".pb.swift")).write_text("\n".join(body))
    contract = Contract(files, gen.messages, gen)
    for f in files:
        if f.service:
            (out / (Path(f.name).stem + ".rpc.swift")).write_text(contract.swift(f.name))
            (wire_out / (Path(f.name).stem + ".stubs.swift")).write_text(contract.stubs(f.name))
    if len(sys.argv) == 5:
        readme = Path(sys.argv[4])
        text = readme.read_text()
        if README_BEGIN not in text or README_END not in text:
            fail(f"{readme}: the method table's markers are missing")
        before, rest = text.split(README_BEGIN, 1)
        _, after = rest.split(README_END, 1)
        readme.write_text(before + contract.readme() + after)


if __name__ == "__main__":
    main()
