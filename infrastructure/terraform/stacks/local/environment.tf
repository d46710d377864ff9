# What sets local apart from the other environments. The other .tf files here are links to
# the stack every environment shares, in ../../modules/environment/stack/.
locals {
  # the local platform owns its own emulator zone (socialnet.test)
  create_zone = true
}
