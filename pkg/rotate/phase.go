package rotate

import "fmt"

// Phase is how far one node's config has come in the rotation of one root. It is derived from
// the config alone (see derivePhase), which is what lets a rerun resume where the nodes are.
type Phase int

// The phases, in order. Each config-changing step of the rotation takes nodes to the next one.
const (
	// PhaseInitial: the old CA issues, the new one is not accepted.
	PhaseInitial Phase = iota
	// PhaseAccepted: the old CA issues, the new one is accepted.
	PhaseAccepted
	// PhaseSwitched: the new CA issues, the old one is accepted.
	PhaseSwitched
	// PhaseRetired: the new CA issues, the old one is gone.
	PhaseRetired
)

func (p Phase) String() string {
	switch p {
	case PhaseInitial:
		return "initial"
	case PhaseAccepted:
		return "accepted"
	case PhaseSwitched:
		return "switched"
	case PhaseRetired:
		return "retired"
	default:
		return fmt.Sprintf("phase(%d)", int(p))
	}
}

// stepName is the step that takes nodes to the phase.
func (p Phase) stepName() string {
	switch p {
	case PhaseAccepted:
		return StepAccept
	case PhaseSwitched:
		return StepSwitch
	case PhaseRetired:
		return StepRetire
	default:
		return p.String()
	}
}

// derivePhase places a node's root between the plan's old and new CA (fingerprints).
func derivePhase(root Root, rc rootConfig, oldFingerprint, newFingerprint string) (Phase, error) {
	if root == RootJoinToken {
		return deriveTokenPhase(rc, oldFingerprint, newFingerprint)
	}

	switch rc.issuingFingerprint {
	case newFingerprint:
		if rc.accepts(oldFingerprint) {
			return PhaseSwitched, nil
		}

		return PhaseRetired, nil
	case oldFingerprint:
		if rc.accepts(newFingerprint) {
			return PhaseAccepted, nil
		}

		return PhaseInitial, nil
	default:
		return 0, fmt.Errorf("%s is %s %s, neither the old (%s) nor the new (%s) one of the rotation plan: "+
			"the plan belongs to another cluster or the config was changed by hand",
			root.issuingPath(), root.what(), shortFingerprint(rc.issuingFingerprint),
			shortFingerprint(oldFingerprint), shortFingerprint(newFingerprint))
	}
}

// what names the kind of issuing material, for messages.
func (r Root) what() string {
	if r == RootJoinToken {
		return "token"
	}

	if fieldsOf[r].keyOnly {
		return "key"
	}

	return "CA"
}
