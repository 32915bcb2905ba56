terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }

  # Partial configuration: give bucket, key, region (and dynamodb_table or use_lockfile) at init time, e.g.
  #   terraform init -backend-config=backend.hcl
  # The state bucket is not the streammine bucket: state must outlive everything this root destroys.
  backend "s3" {}
}
