"""Guest VM stage: image, machine shapes -> QEMU argv, console, SSH, shell, boot session, nested-KVM check."""
