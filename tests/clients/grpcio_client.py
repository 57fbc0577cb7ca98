#!/usr/bin/env python3
"""A KMS v2 client written with grpc C-core (Python grpcio), with its default
settings: on a unix socket C-core sends the percent-encoded socket path as
:authority. Calls Status, Encrypt and Decrypt on the plugin at argv[1] (a
socket path) and prints what it got as JSON. The messages are encoded by
hand (a few protobuf fields), so no generated code is needed."""
import json
import os
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, value):
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def parse(buf):
    """field number -> list of length-delimited values (the only kind here)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire}")
        n, i = read_varint(buf, i)
        out.setdefault(num, []).append(buf[i : i + n])
        i += n
    return out


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def call(channel, method, request):
    fn = channel.unary_unary(
        f"/v2.KeyManagementService/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    return fn(request, timeout=5)


def main():
    sock = sys.argv[1]
    result = {}
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        st = parse(call(ch, "Status", b""))
        result["status"] = {
            "version": st.get(1, [b""])[0].decode(),
            "healthz": st.get(2, [b""])[0].decode(),
            "key_id": st.get(3, [b""])[0].decode(),
        }
        seed = os.urandom(32)
        enc = parse(call(ch, "Encrypt", field(1, seed) + field(2, "grpcio-client")))
        ciphertext, key_id = enc[1][0], enc[2][0].decode()
        annotations = enc.get(3, [])
        req = field(1, ciphertext) + field(2, "grpcio-client") + field(3, key_id)
        for a in annotations:
            req += field(4, a)
        dec = parse(call(ch, "Decrypt", req))
        result["encrypt"] = {"key_id": key_id, "ciphertext_len": len(ciphertext)}
        result["decrypt_matches"] = dec[1][0] == seed
        try:
            call(ch, "Decrypt", field(1, b"\x00" * 40) + field(3, key_id))
            result["garbage"] = "accepted"
        except grpc.RpcError as e:
            result["garbage"] = e.code().name
    print(json.dumps(result))


if __name__ == "__main__":
    main()
