// Package api holds the protobuf definitions of nodepki's own gRPC services and their generated
// Go code (committed; `make generate` regenerates it with protoc, protoc-gen-go and protoc-gen-go-grpc).
package api

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative node/node.proto trustd/trustd.proto
