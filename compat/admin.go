package compat

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/sluicemta/sluice/internal/qid"
)

// PostqueueMode is what one postqueue invocation asks for.
type PostqueueMode byte

const (
	PostqueueList  PostqueueMode = 'p'
	PostqueueJSON  PostqueueMode = 'j'
	PostqueueFlush PostqueueMode = 'f'
	PostqueueID    PostqueueMode = 'i'
	PostqueueSite  PostqueueMode = 's'
)

// PostqueueArgs is a parsed postqueue command line.
type PostqueueArgs struct {
	Mode      PostqueueMode
	Arg       string // the queue id (-i) or site (-s)
	ConfigDir string // -c
	Verbose   int
}

// PostqueueUsage is Postfix's usage text.
const PostqueueUsage = "usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | postqueue -s site"

// ParsePostqueue parses postqueue's arguments (without argv[0]).
func ParsePostqueue(args []string) (*PostqueueArgs, error) {
	pa := &PostqueueArgs{}
	usage := Exitf(ExitUsage, "%s", PostqueueUsage)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			if i < len(args) {
				return nil, usage
			}
			break
		}
		if len(a) < 2 || a[0] != '-' {
			return nil, usage
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			arg := ""
			if strings.IndexByte("cis", c) >= 0 {
				var ok bool
				if arg, ok = optArg(args, &i, a, &j); !ok {
					return nil, usage
				}
			}
			switch c {
			case 'c':
				pa.ConfigDir = arg
			case 'v':
				pa.Verbose++
			case 'p', 'j', 'f', 'i', 's':
				if pa.Mode != 0 {
					return nil, usage
				}
				pa.Mode, pa.Arg = PostqueueMode(c), arg
			default:
				return nil, usage
			}
		}
	}
	if pa.Mode == 0 {
		return nil, usage
	}
	if pa.Mode == PostqueueID {
		if err := checkFlushID(pa.Arg); err != nil {
			return nil, err
		}
	}
	return pa, nil
}

// PostsuperAction is one postsuper operation.
type PostsuperAction byte

const (
	ActDelete  PostsuperAction = 'd'
	ActHold    PostsuperAction = 'h'
	ActRelease PostsuperAction = 'H'
	ActRequeue PostsuperAction = 'r'
	ActExpire  PostsuperAction = 'e'
)

// Done is what postsuper logs after an id: "<id>: removed".
func (a PostsuperAction) Done() string {
	switch a {
	case ActDelete:
		return "removed"
	case ActHold:
		return "placed on hold"
	case ActRelease:
		return "released from hold"
	case ActRequeue:
		return "requeued"
	case ActExpire:
		return "expired"
	}
	return "?"
}

// Total is postsuper's closing line: "Deleted: 3 messages".
func (a PostsuperAction) Total(n int) string {
	var what string
	switch a {
	case ActDelete:
		what = "Deleted"
	case ActHold:
		what = "Placed on hold"
	case ActRelease:
		what = "Released from hold"
	case ActRequeue:
		what = "Requeued"
	case ActExpire:
		what = "Force-expired"
	}
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("%s: %d message%s", what, n, s)
}

// AllIDs is the target that means every message in the named queues.
const AllIDs = "ALL"

// PostsuperOp is one -d/-h/-H/-r/-e option with its target: AllIDs, or
// queue ids ("-" already expanded from stdin by ExpandStdin).
type PostsuperOp struct {
	Action PostsuperAction
	IDs    []string
}

// All reports whether the op targets every message.
func (o PostsuperOp) All() bool { return len(o.IDs) == 1 && o.IDs[0] == AllIDs }

// PostsuperArgs is a parsed postsuper command line.
type PostsuperArgs struct {
	ConfigDir string
	Ops       []PostsuperOp
	Queues    []string // restrict to these queues; empty means all
	Verbose   int
	stdin     []int // indexes of ops whose target was "-"
}

// postsuperQueues are the queue names Postfix's postsuper accepts.
var postsuperQueues = map[string]bool{"hold": true, "incoming": true, "active": true, "deferred": true, "maildrop": true}

// ParsePostsuper parses postsuper's arguments (without argv[0]). A target
// "-" is left for ExpandStdin. Queue ids are checked with qid.Check so
// nothing odd reaches the daemon.
func ParsePostsuper(args []string) (*PostsuperArgs, error) {
	pa := &PostsuperArgs{}
	usage := Exitf(ExitUsage, "usage: postsuper [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] [-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] [-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] [-s (structure fix)] [-S (redundant structure fix)][-v (verbose)] [queue...]")
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			arg := ""
			if strings.IndexByte("cdehHrf", c) >= 0 {
				var ok bool
				if arg, ok = optArg(args, &i, a, &j); !ok {
					return nil, usage
				}
			}
			switch c {
			case 'c':
				pa.ConfigDir = arg
			case 'v':
				pa.Verbose++
			case 'p', 's', 'S':
				// Purge temporaries / structure check: sluice's spool has
				// neither, so these succeed doing nothing.
			case 'f':
				// Postfix 3.7: "expire and/or un-hold" the same ids.
				if err := pa.add(ActExpire, arg); err != nil {
					return nil, err
				}
				if err := pa.add(ActRelease, arg); err != nil {
					return nil, err
				}
			case 'd', 'e', 'h', 'H', 'r':
				if err := pa.add(PostsuperAction(c), arg); err != nil {
					return nil, err
				}
			default:
				return nil, usage
			}
		}
	}
	for _, q := range args[i:] {
		if !postsuperQueues[q] {
			return nil, Exitf(ExitUsage, "invalid directory name: %s", q)
		}
		pa.Queues = append(pa.Queues, q)
	}
	return pa, nil
}

func (pa *PostsuperArgs) add(a PostsuperAction, target string) error {
	switch {
	case target == "-":
		pa.stdin = append(pa.stdin, len(pa.Ops))
		pa.Ops = append(pa.Ops, PostsuperOp{Action: a})
	case target == AllIDs:
		pa.Ops = append(pa.Ops, PostsuperOp{Action: a, IDs: []string{AllIDs}})
	default:
		if err := qid.Check(target); err != nil {
			return Exitf(ExitUsage, "invalid mail queue id: %s", quoteID(target))
		}
		pa.Ops = append(pa.Ops, PostsuperOp{Action: a, IDs: []string{target}})
	}
	return nil
}

// NeedsStdin reports whether any target was "-".
func (pa *PostsuperArgs) NeedsStdin() bool { return len(pa.stdin) > 0 }

// ExpandStdin reads ids from r, one per line (Postfix takes the first word
// of each line), for every "-" target. Bad ids are refused as Postfix does.
func (pa *PostsuperArgs) ExpandStdin(r io.Reader) error {
	if len(pa.stdin) == 0 {
		return nil
	}
	var ids []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		id := strings.TrimRight(f[0], "*!#")
		if err := qid.Check(id); err != nil {
			return Exitf(ExitUsage, "invalid mail queue id: %s", quoteID(id))
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return &ExitError{Code: ExitDataErr, Msg: "postsuper: read queue ids: " + err.Error(), Err: err}
	}
	for _, k := range pa.stdin {
		pa.Ops[k].IDs = append([]string(nil), ids...)
	}
	pa.stdin = nil
	return nil
}

// quoteID keeps outside input printable in a message.
func quoteID(s string) string {
	if len(s) > qid.MaxLen {
		s = s[:qid.MaxLen] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// checkFlushID refuses a malformed id for postqueue -i / sendmail -qI
// with Postfix's message.
func checkFlushID(id string) error {
	if qid.Check(id) != nil {
		more := ""
		if len(id) > 100 {
			id, more = id[:100], "..."
		}
		return Exitf(ExitUsage, "Cannot flush queue ID - invalid name: \"%s%s\"", quoteID(id), more)
	}
	return nil
}

// optArg is getopt's argument of the option letter a[*j] in word args[*i]:
// the rest of the word, else the next word. It moves *i and *j past what
// it took; ok is false when there is no argument.
func optArg(args []string, i *int, a string, j *int) (arg string, ok bool) {
	switch {
	case *j+1 < len(a):
		arg = a[*j+1:]
	case *i+1 < len(args):
		*i++
		arg = args[*i]
	default:
		return "", false
	}
	*j = len(a)
	return arg, true
}
