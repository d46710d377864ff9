# The stacks called these modules themselves before the environment module held them: the moves
# keep the objects of a state written then (no destroy and re-create). They can go once every
# environment's state has been applied with the environment module.

moved {
  from = module.network
  to   = module.environment.module.network
}

moved {
  from = module.nodes
  to   = module.environment.module.nodes
}

moved {
  from = module.dns
  to   = module.environment.module.dns
}

moved {
  from = module.backups
  to   = module.environment.module.backups
}

moved {
  from = module.backup_writer
  to   = module.environment.module.backup_writer
}
