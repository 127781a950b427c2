// Package api holds the protobuf definitions of nodepki's own gRPC services and their generated
// Go code (committed; `make generate` regenerates it with protoc, protoc-gen-go and protoc-gen-go-grpc).
// common/ and machine/ are the subset of Talos's `common` and `machine` packages that talosctl
// calls; third_party/ holds only what protoc needs to resolve their imports.
package api

//go:generate protoc -I . -I third_party --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative node/node.proto trustd/trustd.proto common/common.proto machine/machine.proto
