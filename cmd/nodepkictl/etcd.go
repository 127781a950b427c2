package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
)

func init() {
	etcdCmd := &cobra.Command{
		Use:   "etcd",
		Short: "Reach the etcd cluster of the control planes",
		Long: `Reach the etcd member that a control plane runs (nodepkid --etcd-binary) through the node API:
list the members with their health, or stream a snapshot of the database to a file.`,
	}

	etcdCmd.AddCommand(newEtcdMembersCmd(), newEtcdSnapshotCmd())
	rootCmd.AddCommand(etcdCmd, newBootstrapCmd())
}

func newBootstrapCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "bootstrap",
		Short: "Bootstrap the etcd cluster on one control plane",
		Long: `Make one control plane form a new etcd cluster; the other control planes join it by themselves.
Run it once per cluster, against exactly one node (-n), as with talosctl bootstrap. Needs os:admin.`,
		Example: `  nodepkictl -n 127.0.0.2 bootstrap`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()

			s, err := connect(ctx, cmd)
			if err != nil {
				return err
			}

			defer s.Close()

			if _, err = s.onlyTarget("etcd bootstrap"); err != nil {
				return err
			}

			return s.forEachTarget(ctx, func(ctx context.Context, t target) error {
				if _, err := s.client.Etcd().Bootstrap(ctx, &nodeapi.EtcdBootstrapRequest{}); err != nil {
					return err
				}

				fmt.Fprintf(cmd.OutOrStdout(), "bootstrap requested on %s: etcd forms a new cluster there; the other control planes join it\n", t.label)

				return nil
			})
		},
	}
}

func newEtcdMembersCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "members",
		Short:   "List the etcd members with their health",
		Long:    `List the members of the etcd cluster as the control plane (-n) sees them, with each member's health. Every role may.`,
		Example: `  nodepkictl -n 127.0.0.2 etcd members`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()

			s, err := connect(ctx, cmd)
			if err != nil {
				return err
			}

			defer s.Close()

			out := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(out, "NODE\tID\tNAME\tPEER URLS\tCLIENT URLS\tLEARNER\tHEALTHY\tLEADER\tERROR")

			err = s.forEachTarget(ctx, func(ctx context.Context, t target) error {
				resp, err := s.client.Etcd().MemberList(ctx, &nodeapi.EtcdMemberListRequest{})
				if err != nil {
					return err
				}

				for _, m := range resp.GetMembers() {
					fmt.Fprintf(out, "%s\t%s\t%s\t%s\t%s\t%t\t%t\t%t\t%s\n", t.label, m.GetId(), m.GetName(),
						strings.Join(m.GetPeerUrls(), ","), strings.Join(m.GetClientUrls(), ","),
						m.GetLearner(), m.GetHealthy(), m.GetLeader(), m.GetError())
				}

				return nil
			})

			return errors.Join(err, out.Flush())
		},
	}
}

func newEtcdSnapshotCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot FILE",
		Short: "Stream a snapshot of the etcd database into FILE",
		Long: `Stream a snapshot of the etcd database from one control plane (-n) into FILE, written atomically
with mode 0600: FILE appears only once the whole snapshot arrived. Roles os:admin, os:operator and
os:etcd:backup may; os:reader may not. Check it with "etcdutl snapshot status FILE".`,
		Example: `  nodepkictl -n 127.0.0.2 etcd snapshot db.snapshot`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()

			s, err := connect(ctx, cmd)
			if err != nil {
				return err
			}

			defer s.Close()

			if _, err = s.onlyTarget("etcd snapshot"); err != nil {
				return err
			}

			return s.forEachTarget(ctx, func(ctx context.Context, t target) error {
				size, err := writeSnapshot(ctx, s.client.Etcd(), args[0])
				if err != nil {
					return err
				}

				fmt.Fprintf(cmd.OutOrStdout(), "etcd snapshot of %s written to %s (%d bytes)\n", t.label, args[0], size)

				return nil
			})
		},
	}
}

// writeSnapshot streams the snapshot into a temporary file beside path and renames it into place
// once complete: a broken stream leaves no file, and no partial file is ever at path.
func writeSnapshot(ctx context.Context, etcd nodeapi.EtcdServiceClient, path string) (size int64, err error) {
	stream, err := etcd.Snapshot(ctx, &nodeapi.EtcdSnapshotRequest{})
	if err != nil {
		return 0, err
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("error creating the snapshot file: %w", err)
	}

	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	// CreateTemp makes the file 0600 already; a snapshot holds every secret in etcd.
	for {
		chunk, recvErr := stream.Recv()
		if errors.Is(recvErr, io.EOF) {
			break
		}

		if recvErr != nil {
			return 0, recvErr
		}

		n, writeErr := tmp.Write(chunk.GetData())
		size += int64(n)

		if writeErr != nil {
			return 0, fmt.Errorf("error writing the snapshot file: %w", writeErr)
		}
	}

	if size == 0 {
		return 0, errors.New("the node sent an empty snapshot")
	}

	if err = tmp.Sync(); err != nil {
		return 0, fmt.Errorf("error writing the snapshot file: %w", err)
	}

	if err = tmp.Close(); err != nil {
		return 0, fmt.Errorf("error writing the snapshot file: %w", err)
	}

	if err = os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("error writing the snapshot file: %w", err)
	}

	return size, nil
}
