resource "azurerm_container_registry" "lab" {
  name                = local.names.registry
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  sku                 = "Basic"
  admin_enabled       = false
  tags                = local.tags
}

resource "azurerm_role_assignment" "job_acr_pull" {
  scope                = azurerm_container_registry.lab.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.job.principal_id
  principal_type       = "ServicePrincipal"
}

locals {
  repo_root = abspath("${path.module}/..")
  # What the worker image is built from (the Dockerfile builds `-p aca-job-lab`, which needs the
  # workspace's manifests but not the other members' sources). A change to any of these files changes
  # the hash, so the next apply rebuilds the image and rolls the job to the new tag.
  image_sources = sort(tolist(setunion(
    fileset(local.repo_root, "src/**"),
    fileset(local.repo_root, "{Cargo.toml,Cargo.lock,Dockerfile,.dockerignore}"),
    fileset(local.repo_root, "*/Cargo.toml"),
  )))
  source_hash = sha256(join("", [for f in local.image_sources : "${f}:${filesha256("${local.repo_root}/${f}")}"]))
  image_tag   = substr(local.source_hash, 0, 12)
  image       = "${azurerm_container_registry.lab.login_server}/${var.job_name}:${local.image_tag}"
}

# `az acr build` builds the repository's Dockerfile in the registry, so the participant needs no Docker.
# The command runs without a shell (interpreter = the az argv, command = the build context), so it works
# the same from bash, zsh and PowerShell.
resource "terraform_data" "image" {
  count = var.image_builder == "acr" ? 1 : 0

  triggers_replace = {
    source   = local.source_hash
    registry = azurerm_container_registry.lab.id
  }

  provisioner "local-exec" {
    interpreter = [
      "az", "acr", "build",
      "--registry", azurerm_container_registry.lab.name,
      "--image", "${var.job_name}:${local.image_tag}",
      # Relative to the build context (the last argument), as `az acr build` expects.
      "--file", "Dockerfile",
    ]
    command = local.repo_root
  }
}

# The same image built by the local Docker engine and pushed, for subscriptions where ACR Tasks are not
# available (free credit, trials: `TasksOperationsNotAllowed`). Provisioners run in order; each is one
# program without a shell. linux/amd64 because Container Apps runs amd64 (and laptops may be arm64).
resource "terraform_data" "image_docker" {
  count = var.image_builder == "docker" ? 1 : 0

  triggers_replace = {
    source   = local.source_hash
    registry = azurerm_container_registry.lab.id
  }

  provisioner "local-exec" {
    interpreter = ["az", "acr", "login", "--name"]
    command     = azurerm_container_registry.lab.name
  }

  provisioner "local-exec" {
    interpreter = ["docker", "build", "--platform", "linux/amd64", "--file", "${local.repo_root}/Dockerfile", "--tag", local.image]
    command     = local.repo_root
  }

  provisioner "local-exec" {
    interpreter = ["docker", "push"]
    command     = local.image
  }
}
