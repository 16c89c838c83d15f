// Command kube-testbin is Berth's test control plane in one binary: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubectl and kwok, built from their Go modules.
//
// The component is chosen by the name the binary is called by (scripts/kube-testbin makes a
// symlink per component) or, when it is called as kube-testbin, by its first argument:
//
//	kube-apiserver --etcd-servers=...      (through the symlink)
//	kube-testbin kube-apiserver --etcd-servers=...
//
// One binary links the shared packages (client-go, apimachinery, the API types) once instead of
// six times; upstream shipped the same idea as hyperkube until 1.17. It exists only for tests and
// benchmarks: nothing of Berth itself is written in Go.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // CronJob time zones, as upstream's kube-apiserver and controller-manager embed

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream mains register it
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the build-info metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kwokfast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	kwoklease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwok "sigs.k8s.io/kwok/pkg/kwok/cmd"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	kwoksignals "sigs.k8s.io/kwok/pkg/utils/signals"
)

// components maps each name the binary answers to onto the function that runs it and returns
// the process's exit code.
var components = map[string]func(args []string) int{
	"etcd": func(args []string) int {
		// etcdmain.Main parses args[1:] and exits the process itself.
		etcdmain.Main(append([]string{"etcd"}, args...))
		return 0
	},
	"kube-apiserver":          cobraMain(apiserver.NewAPIServerCommand),
	"kube-controller-manager": cobraMain(controllermanager.NewControllerManagerCommand),
	"kube-scheduler": cobraMain(func() *cobra.Command {
		return scheduler.NewSchedulerCommand()
	}),
	"kubectl": func(args []string) int {
		cmd := kubectl.NewDefaultKubectlCommand()
		cmd.SetArgs(args)
		if err := cli.RunNoErrOutput(cmd); err != nil {
			kubectlutil.CheckErr(err) // prints the error as kubectl does and exits
		}
		return 0
	},
	"kwok": kwokMain,
	"kwok-stages": func([]string) int {
		// The node stages kwokctl gives kwok by default, as kwok's module embeds them: nodes
		// become Ready and keep their Lease. No pod stages: the harness's kubelet stand-in runs
		// pods, so that no IP comes from kwok's own pod CIDR.
		fmt.Print(kwokfast.DefaultNodeInit, "\n---\n", kwoklease.DefaultNodeHeartbeatWithLease)
		return 0
	},
}

// cobraMain runs a Kubernetes component's cobra command the way its upstream main does.
func cobraMain(newCommand func() *cobra.Command) func(args []string) int {
	return func(args []string) int {
		cmd := newCommand()
		cmd.SetArgs(args)
		return cli.Run(cmd)
	}
}

// kwokMain wires kwok's command as sigs.k8s.io/kwok/cmd/kwok does: its global logging and
// configuration flags, then the command with a context that ends on SIGINT/SIGTERM.
func kwokMain(args []string) int {
	flags := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flags.ParseErrorsAllowlist.UnknownFlags = true
	flags.Usage = func() {}
	// kwok's InitFlags parse os.Args; hand them exactly what a standalone kwok would see.
	os.Args = append([]string{"kwok"}, args...)
	// cobra adds pflag.CommandLine to kwok's flags. In this binary it also holds the
	// Kubernetes components' non-bool --version (component-base's verflag registers it at
	// init), which breaks the bool --version cobra gives kwok. Keep every other global flag.
	global := pflag.NewFlagSet("kwok", pflag.ExitOnError)
	pflag.CommandLine.VisitAll(func(f *pflag.Flag) {
		if f.Name != "version" {
			global.AddFlag(f)
		}
	})
	pflag.CommandLine = global

	ctx := kwoksignals.SetupSignalContext()
	ctx, logger := kwoklog.InitFlags(ctx, flags)
	ctx, err := kwokconfig.InitFlags(ctx, flags)
	if err != nil {
		fmt.Fprintln(os.Stderr, flags.FlagUsages())
		logger.Error("Init config flags", "err", err)
		return 1
	}
	cmd := kwok.NewCommand(ctx)
	cmd.PersistentFlags().AddFlagSet(flags)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		logger.Error("Execute exit", "err", err)
		return 1
	}
	return 0
}

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	run, ok := components[name]
	if !ok && len(args) > 0 {
		name, args = args[0], args[1:]
		run, ok = components[name]
	}
	if !ok {
		names := make([]string, 0, len(components))
		for n := range components {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: kube-testbin {%s} [flags]\n", strings.Join(names, "|"))
		os.Exit(2)
	}
	os.Exit(run(args))
}
