// A KMS v2 client written with grpc-go (the gRPC kube-apiserver is built
// on), with Debian's grpc-go and its default settings for a unix socket:
// Status, Encrypt, Decrypt on the plugin at os.Args[1], printed as JSON.
// The messages are encoded by hand (a few protobuf fields), through a codec
// that passes bytes, so no generated code is needed.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func field(num int, value []byte) []byte {
	out := []byte{byte(num<<3 | 2)}
	n := len(value)
	for n >= 0x80 {
		out = append(out, byte(n&0x7f|0x80))
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, value...)
}

func parse(buf []byte) map[int][][]byte {
	out := map[int][][]byte{}
	for i := 0; i < len(buf); {
		key := int(buf[i])
		i++
		n, shift := 0, 0
		for {
			b := buf[i]
			i++
			n |= int(b&0x7f) << shift
			if b&0x80 == 0 {
				break
			}
			shift += 7
		}
		out[key>>3] = append(out[key>>3], buf[i:i+n])
		i += n
	}
	return out
}

func call(cc *grpc.ClientConn, method string, req []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp []byte
	err := cc.Invoke(ctx, "/v2.KeyManagementService/"+method, &req, &resp, grpc.ForceCodec(raw{}))
	return resp, err
}

func first(m map[int][][]byte, k int) []byte {
	if v := m[k]; len(v) > 0 {
		return v[0]
	}
	return nil
}

func main() {
	cc, err := grpc.Dial("unix://"+os.Args[1], grpc.WithInsecure(), grpc.WithBlock(), grpc.WithTimeout(5*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer cc.Close()
	result := map[string]interface{}{}
	st, err := call(cc, "Status", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Status:", err)
		os.Exit(1)
	}
	s := parse(st)
	result["status"] = map[string]string{"version": string(first(s, 1)), "healthz": string(first(s, 2)), "key_id": string(first(s, 3))}
	seed := make([]byte, 32)
	rand.Read(seed)
	enc, err := call(cc, "Encrypt", append(field(1, seed), field(2, []byte("grpc-go-client"))...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "Encrypt:", err)
		os.Exit(1)
	}
	e := parse(enc)
	req := append(field(1, first(e, 1)), field(3, first(e, 2))...)
	for _, a := range e[3] {
		req = append(req, field(4, a)...)
	}
	dec, err := call(cc, "Decrypt", req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Decrypt:", err)
		os.Exit(1)
	}
	result["encrypt_key_id"] = string(first(e, 2))
	result["decrypt_matches"] = bytes.Equal(first(parse(dec), 1), seed)
	_, err = call(cc, "Decrypt", append(field(1, make([]byte, 40)), field(3, first(e, 2))...))
	result["garbage"] = status.Code(err).String()
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}
