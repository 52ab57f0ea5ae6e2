# The lake: Parquet blocks written by the feed pods' aggregators, laid out as
#   <prefix>/<channel>/exchange=<EXCHANGE>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/<first-stream-id>.parquet
# (docs/contracts.md). Blocks are written once and read by Athena/DuckDB; they cool down with age.

module "bucket" {
  source = "../s3-bucket"

  name              = var.bucket_name
  access_log_bucket = var.access_log_bucket
  transitions = [
    { days = var.infrequent_access_after_days, storage_class = "STANDARD_IA" },
    { days = var.glacier_ir_after_days, storage_class = "GLACIER_IR" },
  ]
  expiration_days                    = null
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  abort_incomplete_multipart_days    = 2
  tags                               = var.tags
}

check "transitions_ordered" {
  assert {
    condition     = var.glacier_ir_after_days >= var.infrequent_access_after_days + 30
    error_message = "glacier_ir_after_days must be at least 30 days after infrequent_access_after_days (STANDARD_IA minimum storage duration)."
  }
}
